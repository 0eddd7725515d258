//! Ethernet II / IPv4 / UDP framing for the AF_XDP path: build frames with correct IPv4
//! and UDP checksums, and parse received frames with bounds checks.

use std::net::Ipv4Addr;

pub const ETH_HDR_BYTES: usize = 14;
pub const IPV4_HDR_BYTES: usize = 20;
pub const UDP_HDR_BYTES: usize = 8;
pub const HEADERS_BYTES: usize = ETH_HDR_BYTES + IPV4_HDR_BYTES + UDP_HDR_BYTES;

/// One end of a UDP flow on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub port: u16,
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum16(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum16(data, 0))
}

/// Write an Ethernet/IPv4/UDP frame carrying `payload` into `buf`; returns its length, or
/// `None` if `buf` is too small or the payload too large for one datagram.
pub fn build_udp_frame(
    buf: &mut [u8],
    src: &Endpoint,
    dst: &Endpoint,
    ip_id: u16,
    payload: &[u8],
) -> Option<usize> {
    let total = HEADERS_BYTES + payload.len();
    if total > buf.len() || IPV4_HDR_BYTES + UDP_HDR_BYTES + payload.len() > usize::from(u16::MAX) {
        return None;
    }
    let f = &mut buf[..total];
    f[0..6].copy_from_slice(&dst.mac);
    f[6..12].copy_from_slice(&src.mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (IPV4_HDR_BYTES + UDP_HDR_BYTES + payload.len()) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
    ip[8] = 64;
    ip[9] = 17;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&src.ip.octets());
    ip[16..20].copy_from_slice(&dst.ip.octets());
    let c = checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp_len = (UDP_HDR_BYTES + payload.len()) as u16;
    let udp = &mut f[34..];
    udp[0..2].copy_from_slice(&src.port.to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    udp[8..].copy_from_slice(payload);
    // pseudo header: src, dst, zero+proto, udp length
    let mut sum = sum16(&src.ip.octets(), 0);
    sum = sum16(&dst.ip.octets(), sum);
    sum += 17 + u32::from(udp_len);
    let mut c = fold(sum16(udp, sum));
    if c == 0 {
        c = 0xffff;
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

/// A received IPv4 UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpView<'a> {
    pub src_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_ip: Ipv4Addr,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// Parse an Ethernet II frame holding an unfragmented IPv4 UDP datagram (IP options
/// allowed); checks lengths and the IPv4 header checksum. The UDP checksum is not checked:
/// frames from a local sender may carry a partial one (checksum offload).
pub fn parse_udp_frame(frame: &[u8]) -> Option<UdpView<'_>> {
    if frame.len() < HEADERS_BYTES || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    if ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < IPV4_HDR_BYTES || ip.len() < ihl + UDP_HDR_BYTES || ip[9] != 17 {
        return None;
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || checksum(&ip[..ihl]) != 0 {
        return None;
    }
    let ip_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip_len < ihl + UDP_HDR_BYTES || ip_len > ip.len() {
        return None;
    }
    let udp = &ip[ihl..ip_len];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < UDP_HDR_BYTES || udp_len > udp.len() {
        return None;
    }
    Some(UdpView {
        src_mac: frame[6..12].try_into().ok()?,
        src_ip: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_ip: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        payload: &udp[UDP_HDR_BYTES..udp_len],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn built_frame_parses_back_with_valid_checksums() {
        let a = Endpoint {
            mac: [2, 0, 0, 0, 0, 1],
            ip: Ipv4Addr::new(10, 201, 0, 1),
            port: 4000,
        };
        let b = Endpoint {
            mac: [2, 0, 0, 0, 0, 2],
            ip: Ipv4Addr::new(10, 201, 0, 2),
            port: 8008,
        };
        let mut buf = [0u8; 2048];
        for len in [0usize, 1, 7, 160, 1232] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let n = build_udp_frame(&mut buf, &a, &b, 9, &payload).unwrap();
            let v = parse_udp_frame(&buf[..n]).unwrap();
            assert_eq!(
                (v.src_ip, v.src_port, v.dst_ip, v.dst_port),
                (a.ip, a.port, b.ip, b.port)
            );
            assert_eq!(v.payload, &payload[..]);
            assert_eq!(v.src_mac, a.mac);
            // UDP checksum over pseudo header + segment folds to zero
            let udp = &buf[34..n];
            let mut s = sum16(&a.ip.octets(), 0);
            s = sum16(&b.ip.octets(), s);
            s += 17 + udp.len() as u32;
            assert_eq!(fold(sum16(udp, s)), 0);
        }
        // a known IPv4 header checksum (RFC 1071 style example)
        let hdr = [
            0x45, 0, 0, 0x73, 0, 0, 0x40, 0, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0, 1, 0xc0, 0xa8, 0,
            0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
        let mut bad = buf;
        bad[20] ^= 1;
        assert!(parse_udp_frame(&bad[..HEADERS_BYTES + 10]).is_none());
    }

    proptest! {
        #[test]
        fn parse_never_panics(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_udp_frame(&frame);
        }
    }
}
