use super::*;
use proptest::prelude::*;

fn decode_all(
    dec: &mut BodyDecoder,
    input: &[u8],
    piece: usize,
) -> Result<(Vec<u8>, usize), HttpError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < input.len() && !dec.is_done() {
        let end = (pos + piece.max(1)).min(input.len());
        let mut p = pos;
        loop {
            let d = dec.decode(&input[p..end])?;
            out.extend_from_slice(&input[p..end][d.data.clone()]);
            p += d.consumed;
            if d.done || d.consumed == 0 || p == end {
                break;
            }
        }
        if dec.is_done() {
            return Ok((out, p));
        }
        pos = end;
    }
    Ok((out, pos))
}

#[test]
fn url_parse_and_join() {
    let u = Url::parse("http://127.0.0.1:8899/snapshot.tar.bz2").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.path.as_str()),
        ("127.0.0.1", 8899, "/snapshot.tar.bz2")
    );
    assert_eq!(u.file_name(), "snapshot.tar.bz2");
    let j = u.join("/snapshot-100-abc.tar.zst").unwrap();
    assert_eq!(
        j.to_string(),
        "http://127.0.0.1:8899/snapshot-100-abc.tar.zst"
    );
    let j = Url::parse("http://h/a/b").unwrap().join("c").unwrap();
    assert_eq!(j.path, "/a/c");
    let j = u.join("http://other:1/x").unwrap();
    assert_eq!((j.host.as_str(), j.port), ("other", 1));
    assert_eq!(Url::parse("http://h").unwrap().path, "/");
    assert_eq!(Url::parse("http://[::1]:80/x").unwrap().host, "::1");
    assert!(Url::parse("https://h/").is_err());
    assert!(Url::parse("http://h:99999/").is_err());
    assert!(Url::parse("http:///x").is_err());
    assert!(u.join("https://x/").is_err());
}

#[test]
fn request_writer() {
    let u = Url::parse("http://example:8080/snap.tar.zst").unwrap();
    let mut out = Vec::new();
    write_request(
        &Request {
            method: Method::Get,
            url: &u,
            range: ByteRange::from_start_len(100, 50),
            headers: &[("X-Evil", "a\r\nb")],
            body: b"",
            keep_alive: true,
        },
        &mut out,
    );
    let s = String::from_utf8(out.clone()).unwrap();
    assert!(s.starts_with("GET /snap.tar.zst HTTP/1.1\r\nHost: example:8080\r\n"));
    assert!(s.contains("Range: bytes=100-149\r\n"));
    assert!(!s.contains("X-Evil"));
    assert!(s.ends_with("\r\n\r\n"));
    let (req, n) = parse_request_head(&out, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(n, out.len());
    assert_eq!(req.method, Method::Get);
    assert_eq!(req.target, "/snap.tar.zst");
    assert_eq!(req.header("range"), Some("bytes=100-149"));
    assert!(req.keep_alive);
}

#[test]
fn response_head_and_redirect() {
    let raw = b"HTTP/1.1 303 See Other\r\nLocation: /snapshot-100-Hash.tar.zst\r\nContent-Length: 0\r\n\r\nrest";
    let (h, n) = parse_response_head(raw, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(h.status, 303);
    assert_eq!(&raw[n..], b"rest");
    assert_eq!(h.redirect_location(), Some("/snapshot-100-Hash.tar.zst"));
    assert_eq!(h.body_kind(Method::Get), BodyKind::Length(0));
    assert!(h.keep_alive);
    // Partial head.
    assert_eq!(
        parse_response_head(&raw[..20], &Limits::default()).unwrap(),
        None
    );
    // 206 with content-range.
    let raw = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\nContent-Length: 10\r\nAccept-Ranges: bytes\r\nETag: \"abc\"\r\n\r\n";
    let (h, _) = parse_response_head(raw, &Limits::default())
        .unwrap()
        .unwrap();
    let cr = h.content_range().unwrap().unwrap();
    assert_eq!(cr.range, Some(ByteRange { first: 0, last: 9 }));
    assert_eq!(cr.total_bytes, Some(100));
    assert!(h.accepts_ranges());
    assert_eq!(h.header("etag"), Some("\"abc\""));
    assert_eq!(h.body_kind(Method::Head), BodyKind::Empty);
    // HTTP/1.0 without keep-alive: close, until-close body.
    let (h, _) = parse_response_head(b"HTTP/1.0 200 OK\r\n\r\n", &Limits::default())
        .unwrap()
        .unwrap();
    assert!(!h.keep_alive);
    assert_eq!(h.body_kind(Method::Get), BodyKind::UntilClose);
}

#[test]
fn head_limits() {
    let lim = Limits {
        max_head_bytes: 64,
        max_headers: 2,
        ..Limits::default()
    };
    let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(100));
    assert_eq!(
        parse_response_head(big.as_bytes(), &lim),
        Err(HttpError::HeadTooLarge { limit: 64 })
    );
    let partial = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(100));
    assert_eq!(
        parse_response_head(partial.as_bytes(), &lim),
        Err(HttpError::HeadTooLarge { limit: 64 })
    );
    let many = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(
        parse_response_head(many.as_bytes(), &lim),
        Err(HttpError::TooManyHeaders { limit: 2 })
    );
    let amb = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        parse_response_head(amb.as_bytes(), &Limits::default()),
        Err(HttpError::AmbiguousLength)
    );
    let conflict = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
    assert!(parse_response_head(conflict.as_bytes(), &Limits::default()).is_err());
    let neg = "HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n";
    assert!(parse_response_head(neg.as_bytes(), &Limits::default()).is_err());
    let gz = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
    assert!(matches!(
        parse_response_head(gz.as_bytes(), &Limits::default()),
        Err(HttpError::UnsupportedTransferEncoding(_))
    ));
}

#[test]
fn chunked_body_roundtrip_any_split() {
    let mut body = Vec::new();
    write_chunk(b"hello ", &mut body);
    write_chunk(b"world", &mut body);
    write_chunk(b"", &mut body);
    body.extend_from_slice(b"NEXT");
    for piece in 1..body.len() {
        let mut dec = BodyDecoder::new(BodyKind::Chunked, Limits::default()).unwrap();
        let (out, used) = decode_all(&mut dec, &body, piece).unwrap();
        assert_eq!(out, b"hello world", "piece {piece}");
        assert!(dec.is_done());
        assert_eq!(&body[used..], b"NEXT", "piece {piece}");
    }
    // Extensions and trailers.
    let raw = b"5;ext=1\r\nabcde\r\n0\r\nX-T: 1\r\n\r\n";
    let mut dec = BodyDecoder::new(BodyKind::Chunked, Limits::default()).unwrap();
    let (out, used) = decode_all(&mut dec, raw, raw.len()).unwrap();
    assert_eq!((out.as_slice(), used), (&b"abcde"[..], raw.len()));
}

#[test]
fn chunked_body_rejections() {
    let lim = Limits {
        max_chunk_size_bytes: 16,
        max_chunk_line_bytes: 8,
        ..Limits::default()
    };
    let mut dec = BodyDecoder::new(BodyKind::Chunked, lim).unwrap();
    assert_eq!(
        dec.decode(b"11\r\n"),
        Err(HttpError::ChunkTooLarge {
            size: 17,
            limit: 16
        })
    );
    let mut dec = BodyDecoder::new(BodyKind::Chunked, lim).unwrap();
    assert!(matches!(
        dec.decode(b"zz\r\n"),
        Err(HttpError::BadChunkLine { .. })
    ));
    let mut dec = BodyDecoder::new(BodyKind::Chunked, lim).unwrap();
    assert_eq!(
        dec.decode(b"0000000000001"),
        Err(HttpError::ChunkLineTooLong { limit: 8 })
    );
    let mut dec = BodyDecoder::new(BodyKind::Chunked, lim).unwrap();
    let d = dec.decode(b"2\r\nabXY").unwrap();
    assert_eq!(d.data, 3..5);
    assert!(matches!(
        dec.decode(b"XY"),
        Err(HttpError::MissingChunkCrlf { .. })
    ));
    let small = Limits {
        max_body_bytes: 4,
        ..Limits::default()
    };
    assert!(BodyDecoder::new(BodyKind::Length(5), small).is_err());
    let mut dec = BodyDecoder::new(BodyKind::UntilClose, small).unwrap();
    assert!(dec.decode(b"12345").is_err());
}

#[test]
fn content_length_body_stops_at_length() {
    let mut dec = BodyDecoder::new(BodyKind::Length(3), Limits::default()).unwrap();
    let d = dec.decode(b"abcdef").unwrap();
    assert_eq!(
        d,
        Decoded {
            consumed: 3,
            data: 0..3,
            done: true
        }
    );
    assert!(!dec.finish_on_close() || dec.is_done());
    let dec = BodyDecoder::new(BodyKind::Length(3), Limits::default()).unwrap();
    assert!(!dec.finish_on_close());
}

#[test]
fn range_headers() {
    let sat = |first, last| Ok(RangeRequest::Satisfiable(ByteRange { first, last }));
    assert_eq!(parse_range_header("bytes=0-9", 100), sat(0, 9));
    assert_eq!(parse_range_header("bytes=90-", 100), sat(90, 99));
    assert_eq!(parse_range_header("bytes=90-1000", 100), sat(90, 99));
    assert_eq!(parse_range_header("bytes=-10", 100), sat(90, 99));
    assert_eq!(parse_range_header("bytes=-1000", 100), sat(0, 99));
    assert_eq!(
        parse_range_header("bytes=100-", 100),
        Ok(RangeRequest::Unsatisfiable)
    );
    assert_eq!(
        parse_range_header("bytes=-0", 100),
        Ok(RangeRequest::Unsatisfiable)
    );
    assert!(parse_range_header("bytes=9-0", 100).is_err());
    assert!(parse_range_header("bytes=0-1,5-6", 100).is_err());
    assert!(parse_range_header("items=0-1", 100).is_err());
    assert!(parse_range_header("bytes=99999999999999999999-", 100).is_err());
    assert_eq!(
        parse_content_range("bytes 5-9/10"),
        Ok(ContentRange {
            range: Some(ByteRange { first: 5, last: 9 }),
            total_bytes: Some(10)
        })
    );
    assert_eq!(
        parse_content_range("bytes */10"),
        Ok(ContentRange {
            range: None,
            total_bytes: Some(10)
        })
    );
    assert_eq!(
        parse_content_range("bytes 0-9/*").unwrap().total_bytes,
        None
    );
    assert!(parse_content_range("bytes 5-10/10").is_err());
    assert!(parse_content_range("bytes */*").is_err());
    assert!(parse_content_range("bytes 9-5/10").is_err());
}

#[test]
fn response_writer_roundtrip() {
    let mut out = Vec::new();
    write_response_head(
        206,
        "Partial Content",
        &[
            ("Content-Range", "bytes 0-0/1".into()),
            ("Bad", "x\ny".into()),
        ],
        Some(1),
        false,
        &mut out,
    );
    let (h, n) = parse_response_head(&out, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(n, out.len());
    assert_eq!(h.status, 206);
    assert_eq!(h.content_length, Some(1));
    assert!(!h.keep_alive);
    assert!(h.header("bad").is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let lim = Limits { max_head_bytes: 512, max_headers: 8, max_chunk_size_bytes: 4096, max_chunk_line_bytes: 64, max_body_bytes: 1 << 20 };
        let _ = parse_response_head(&data, &lim);
        let _ = parse_request_head(&data, &lim);
        if let Ok(s) = std::str::from_utf8(&data) {
            let _ = parse_range_header(s, 1000);
            let _ = parse_content_range(s);
            let _ = Url::parse(s);
            let _ = Url::parse("http://h/").unwrap().join(s);
        }
        for kind in [BodyKind::Chunked, BodyKind::Length(100), BodyKind::UntilClose] {
            let mut dec = BodyDecoder::new(kind, lim).unwrap();
            let mut pos = 0;
            for _ in 0..data.len() + 2 {
                match dec.decode(&data[pos..]) {
                    Ok(d) => {
                        prop_assert!(d.data.end <= d.consumed && d.data.start <= d.data.end);
                        pos += d.consumed;
                        if d.done || d.consumed == 0 { break; }
                    }
                    Err(_) => break,
                }
            }
            prop_assert!(pos <= data.len());
        }
    }

    #[test]
    fn random_http_like_heads_never_panic(lines in proptest::collection::vec("[ -~]{0,40}", 0..12)) {
        let raw = format!("HTTP/1.1 200 OK\r\n{}\r\n\r\n", lines.join("\r\n"));
        let _ = parse_response_head(raw.as_bytes(), &Limits::default());
        let raw = format!("GET / HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n"));
        let _ = parse_request_head(raw.as_bytes(), &Limits::default());
    }

    #[test]
    fn chunked_roundtrip(pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 0..8), split in 1usize..50) {
        let mut raw = Vec::new();
        for p in &pieces { write_chunk(p, &mut raw); }
        write_chunk(b"", &mut raw);
        let mut dec = BodyDecoder::new(BodyKind::Chunked, Limits::default()).unwrap();
        let (out, used) = decode_all(&mut dec, &raw, split).unwrap();
        prop_assert_eq!(out, pieces.concat());
        prop_assert_eq!(used, raw.len());
        prop_assert!(dec.is_done());
    }

    #[test]
    fn range_roundtrip(first in 0u64..1_000_000, len in 1u64..1_000_000, size in 1u64..3_000_000) {
        let r = ByteRange::from_start_len(first, len).unwrap();
        match parse_range_header(&format!("bytes={}-{}", r.first, r.last), size).unwrap() {
            RangeRequest::Satisfiable(got) => {
                prop_assert!(first < size);
                prop_assert_eq!(got.first, first);
                prop_assert_eq!(got.last, r.last.min(size - 1));
                let cr = parse_content_range(&format!("bytes {}-{}/{}", got.first, got.last, size)).unwrap();
                prop_assert_eq!(cr.range, Some(got));
            }
            RangeRequest::Unsatisfiable => prop_assert!(first >= size),
        }
    }
}
