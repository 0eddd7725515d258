//! Sans-IO devp2p: RLPx ECIES handshake, framing and MACs, Hello, eth/66-69 and snap/1 messages.
