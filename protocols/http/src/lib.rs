//! Sans-IO HTTP/1.1 range framing.
