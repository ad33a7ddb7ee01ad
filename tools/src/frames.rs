//! Ethernet frames with valid IPv4/IPv6 and UDP/TCP headers: built
//! synthetically (fixed sizes or IMIX) or parsed from captured traffic.

use crate::soft::inet_csum;

/// Ethernet header length (no VLAN tag).
pub const ETH_LEN: usize = 14;
/// Smallest frame the builder makes: Ethernet + IPv6 + TCP headers.
pub const MIN_FRAME: usize = ETH_LEN + 40 + 20;
/// Largest frame (no FCS), as on a 1500-byte-MTU Ethernet.
pub const MAX_FRAME: usize = 1518;

/// The simple IMIX: 64, 594 and 1518 bytes at 7:4:1 (12-packet cycle).
pub const IMIX: [usize; 12] = [64, 594, 64, 1518, 64, 594, 64, 594, 64, 594, 64, 64];

/// Where the interesting parts of a parsed frame are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// IP protocol (6 TCP, 17 UDP).
    pub proto: u8,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    /// Bytes from `l4` to the end of the IP payload.
    pub l4_len: usize,
}

impl Layout {
    /// Offset of the L4 checksum field.
    pub fn csum_off(&self) -> usize {
        self.l4 + if self.proto == 6 { 16 } else { 6 }
    }

    /// The RSS tuple (source and destination address, then ports) is one
    /// contiguous run of the frame when the IPv4 header has no options.
    pub fn rss_range(&self) -> core::ops::Range<usize> {
        if self.v6 {
            self.l3 + 8..self.l3 + 40 + 4
        } else {
            self.l3 + 12..self.l3 + 20 + 4
        }
    }

    /// The pseudo-header the L4 checksum covers.
    pub fn pseudo_header(&self, frame: &[u8]) -> Vec<u8> {
        let len = self.l4_len;
        let mut p = Vec::with_capacity(40);
        if self.v6 {
            p.extend_from_slice(&frame[self.l3 + 8..self.l3 + 40]);
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, self.proto]);
        } else {
            p.extend_from_slice(&frame[self.l3 + 12..self.l3 + 20]);
            p.extend_from_slice(&[0, self.proto]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        p
    }
}

/// Parses an Ethernet frame carrying IPv4 (without options) or IPv6
/// (without extension headers) and UDP or TCP; `None` for anything else
/// or a truncated frame.
pub fn parse(frame: &[u8]) -> Option<Layout> {
    if frame.len() < ETH_LEN + 20 {
        return None;
    }
    let l3 = ETH_LEN;
    let (v6, proto, l4, ip_end) = match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => {
            let ihl = usize::from(frame[l3] & 0x0f) * 4;
            if frame[l3] >> 4 != 4 || ihl != 20 {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
            (false, frame[l3 + 9], l3 + 20, l3 + total)
        }
        0x86dd => {
            if frame.len() < l3 + 40 || frame[l3] >> 4 != 6 {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]));
            (true, frame[l3 + 6], l3 + 40, l3 + 40 + plen)
        }
        _ => return None,
    };
    let hdr = match proto {
        6 => 20,
        17 => 8,
        _ => return None,
    };
    if ip_end > frame.len() || ip_end < l4 + hdr {
        return None;
    }
    Some(Layout {
        v6,
        proto,
        l3,
        l4,
        l4_len: ip_end - l4,
    })
}

/// Software L4 checksum of `frame` as it should be stored (UDP's zero
/// becomes 0xffff), computed with the checksum field taken as zero.
pub fn l4_checksum(frame: &[u8], l: &Layout) -> u16 {
    let c = l.csum_off();
    let ph = l.pseudo_header(frame);
    let seg = &frame[l.l4..l.l4 + l.l4_len];
    let rel = c - l.l4;
    let v = inet_csum(0, &[&ph, &seg[..rel], &[0, 0], &seg[rel + 2..]]);
    if v == 0 && l.proto == 17 { 0xffff } else { v }
}

/// Small deterministic generator (xorshift) so runs are reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (a zero seed is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Builds one frame of `size` bytes (at least its headers, at most
/// [`MAX_FRAME`]) for flow `flow` with valid IP and L4 checksums.
pub fn build(size: usize, v6: bool, tcp: bool, flow: u32, rng: &mut Rng) -> Vec<u8> {
    let headers = ETH_LEN + if v6 { 40 } else { 20 } + if tcp { 20 } else { 8 };
    let size = size.clamp(headers, MAX_FRAME);
    let mut f = vec![0u8; size];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    let l3 = ETH_LEN;
    let proto: u8 = if tcp { 6 } else { 17 };
    let ip_len = size - ETH_LEN;
    let fl = flow.to_be_bytes();
    let l4 = if v6 {
        f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        f[l3] = 0x60;
        f[l3 + 4..l3 + 6].copy_from_slice(&((ip_len - 40) as u16).to_be_bytes());
        f[l3 + 6] = proto;
        f[l3 + 7] = 64;
        f[l3 + 8..l3 + 24].copy_from_slice(&[
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, fl[0], fl[1], fl[2], fl[3],
        ]);
        f[l3 + 24..l3 + 40]
            .copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1]);
        l3 + 40
    } else {
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[l3] = 0x45;
        f[l3 + 2..l3 + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        f[l3 + 4..l3 + 6].copy_from_slice(&(flow as u16).to_be_bytes());
        f[l3 + 8] = 64;
        f[l3 + 9] = proto;
        f[l3 + 12..l3 + 16].copy_from_slice(&[10, fl[1], fl[2], fl[3]]);
        f[l3 + 16..l3 + 20].copy_from_slice(&[192, 0, 2, 1]);
        let c = inet_csum(0, &[&f[l3..l3 + 20]]);
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        l3 + 20
    };
    let sport = 1024 + (flow % 60000) as u16;
    f[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
    f[l4 + 2..l4 + 4].copy_from_slice(&(if tcp { 443u16 } else { 4789 }).to_be_bytes());
    let hdr = if tcp {
        f[l4 + 4..l4 + 8].copy_from_slice(&(rng.next_u64() as u32).to_be_bytes());
        f[l4 + 12] = 5 << 4;
        f[l4 + 13] = 0x18; // PSH, ACK
        f[l4 + 14..l4 + 16].copy_from_slice(&64240u16.to_be_bytes());
        20
    } else {
        f[l4 + 4..l4 + 6].copy_from_slice(&((size - l4) as u16).to_be_bytes());
        8
    };
    rng.fill(&mut f[l4 + hdr..]);
    let l = Layout {
        v6,
        proto,
        l3,
        l4,
        l4_len: size - l4,
    };
    let c = l4_checksum(&f, &l);
    f[l.csum_off()..l.csum_off() + 2].copy_from_slice(&c.to_be_bytes());
    f
}

/// `n` frames: sizes cycle through `sizes`, one IPv6 frame in four, TCP
/// and UDP alternating, flows 0..`flows` round-robin.
pub fn traffic(n: usize, sizes: &[usize], flows: u32, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let size = sizes[i % sizes.len().max(1)];
            build(
                size,
                i % 4 == 3,
                i % 2 == 0,
                (i as u32) % flows.max(1),
                &mut rng,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_parse_and_verify() {
        for (i, f) in traffic(64, &IMIX, 8, 1).iter().enumerate() {
            let l = parse(f).unwrap_or_else(|| panic!("frame {i} does not parse"));
            let stored = u16::from_be_bytes([f[l.csum_off()], f[l.csum_off() + 1]]);
            assert_eq!(stored, l4_checksum(f, &l), "frame {i}");
            // Summing over pseudo-header + segment with the checksum in place gives 0.
            let ph = l.pseudo_header(f);
            assert_eq!(
                inet_csum(0, &[&ph, &f[l.l4..l.l4 + l.l4_len]]),
                0,
                "frame {i}"
            );
            if !l.v6 {
                assert_eq!(inet_csum(0, &[&f[l.l3..l.l3 + 20]]), 0);
            }
            assert_eq!(f.len(), IMIX[i % 12], "IMIX sizes are kept exactly");
        }
    }

    #[test]
    fn non_ip_and_truncated_frames_are_refused() {
        let mut f = traffic(1, &[128], 1, 2).remove(0);
        assert!(parse(&f[..40]).is_none());
        f[12] = 0x08;
        f[13] = 0x06; // ARP
        assert!(parse(&f).is_none());
    }
}
