//! Frames from a capture file (classic pcap, Ethernet link type).

use std::path::Path;

use anyhow::{Context, Result, bail};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;

use crate::frames;

/// Frames read from a pcap file that the pipelines can use.
#[derive(Debug, Default)]
pub struct Capture {
    /// Ethernet + IPv4/IPv6 + UDP/TCP frames, in file order.
    pub frames: Vec<Vec<u8>>,
    /// Records skipped: other protocols, truncated captures, jumbo frames.
    pub skipped: usize,
}

/// Reads `path`. Errors (unreadable, not a pcap, wrong link type, a
/// corrupt record, nothing usable) carry a message naming the file.
pub fn read(path: &Path) -> Result<Capture> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open pcap file {}", path.display()))?;
    parse(file, &path.display().to_string())
}

/// Reads a capture from `input`; `name` (the file name) heads every error.
/// Split from [`read`] so that the fuzzer can feed it bytes.
pub fn parse<R: std::io::Read>(input: R, name: &str) -> Result<Capture> {
    let mut r = PcapReader::new(input)
        .map_err(|e| anyhow::anyhow!("{name} is not a readable pcap file: {e}"))?;
    let link = r.header().datalink;
    if link != DataLink::ETHERNET {
        bail!("{name}: link type {link:?} is not supported (Ethernet only)");
    }
    let mut cap = Capture::default();
    let mut n = 0usize;
    while let Some(pkt) = r.next_packet() {
        n += 1;
        let pkt = pkt.map_err(|e| anyhow::anyhow!("{name}: record {n} is malformed: {e}"))?;
        let data = pkt.data;
        if (pkt.orig_len as usize) == data.len()
            && data.len() <= frames::MAX_FRAME
            && frames::parse(&data).is_some()
        {
            cap.frames.push(data.into_owned());
        } else {
            cap.skipped += 1;
        }
    }
    if cap.frames.is_empty() {
        bail!("{name}: none of its {n} records is a complete Ethernet IPv4/IPv6 UDP/TCP frame");
    }
    Ok(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use std::time::Duration;

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("pktaccel-pcap-{}-{name}", std::process::id()))
    }

    #[test]
    fn round_trip_and_skips() {
        let p = tmp("ok.pcap");
        let frames = frames::traffic(5, &[100, 200], 3, 9);
        {
            let f = std::fs::File::create(&p).unwrap();
            let mut w = PcapWriter::with_header(f, PcapHeader::default()).unwrap();
            for fr in &frames {
                w.write_packet(&PcapPacket::new(Duration::ZERO, fr.len() as u32, fr))
                    .unwrap();
            }
            w.write_packet(&PcapPacket::new(Duration::ZERO, 60, &[0u8; 60]))
                .unwrap();
        }
        let c = read(&p).unwrap();
        assert_eq!(c.frames, frames);
        assert_eq!(c.skipped, 1);
        std::fs::remove_file(&p).ok();
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(
            read(Path::new("/nonexistent/x.pcap"))
                .unwrap_err()
                .to_string()
                .contains("cannot open")
        );
        let p = tmp("garbage.pcap");
        std::fs::write(&p, b"this is not a capture file at all").unwrap();
        assert!(
            read(&p)
                .unwrap_err()
                .to_string()
                .contains("not a readable pcap")
        );
        // A valid header followed by a truncated record.
        let mut bytes = Vec::new();
        {
            let mut w = PcapWriter::with_header(&mut bytes, PcapHeader::default()).unwrap();
            let fr = frames::traffic(1, &[100], 1, 1).remove(0);
            w.write_packet(&PcapPacket::new(Duration::ZERO, 100, &fr))
                .unwrap();
        }
        bytes.truncate(bytes.len() - 30);
        std::fs::write(&p, &bytes).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("malformed"), "{e}");
        std::fs::remove_file(&p).ok();
    }
}
