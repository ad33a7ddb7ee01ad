//! Where the faults meet the request path: what the worker does with a
//! request it has processed, before the completion goes on the used ring.
//! Kept here, apart from the processor, so that the request path has one
//! call to make ([`after_request`]) and no fault logic of its own.

use pktaccel_abi::{STATUS_RECORD_SIZE, StatusRecord};
use tracing::{error, warn};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::Faults;

/// What the worker does with a processed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Put it on the used ring with this used length.
    Used(u32),
    /// Never complete it (the `drop` fault).
    Dropped,
}

/// The request just processed, as the faults need to see it.
#[derive(Clone, Copy, Debug)]
pub struct Processed {
    /// Its queue.
    pub queue: u16,
    /// Its op, when the header could be read.
    pub op: Option<u16>,
    /// Guest address of the status record the device wrote, if it wrote one.
    pub status_addr: Option<u64>,
    /// The used length the device computed.
    pub used: u32,
}

/// Applies the faults to one processed request: waits out a delay,
/// overwrites the status record with an injected error status, drops the
/// completion or falsifies its used length. A `die-after` fault ends the
/// process here, before this request completes.
pub fn after_request<M: GuestMemoryBackend>(
    faults: &Faults,
    mem: &M,
    req: Processed,
) -> Completion {
    if !faults.active() {
        return Completion::Used(req.used);
    }
    let f = faults.on_request(req.queue, req.op);
    if let Some(id) = f.die {
        let spec = faults.describe(id);
        error!(queue = req.queue, fault = %spec, "injected death: the device stops now");
        eprintln!("pktaccel-device: fault \"{spec}\" fired: exiting as a dead device (status 3)");
        std::process::exit(3);
    }
    if !f.delay.is_zero() {
        std::thread::sleep(f.delay);
    }
    let mut used = req.used;
    if let (Some(status), Some(addr)) = (f.status, req.status_addr) {
        let rec = StatusRecord {
            status,
            len: 0,
            result: 0,
        };
        if mem
            .write_slice(&rec.to_le_bytes(), GuestAddress(addr))
            .is_ok()
        {
            used = STATUS_RECORD_SIZE as u32;
        } else {
            warn!(addr, "injected status: cannot write the status record");
        }
    }
    if f.drop {
        return Completion::Dropped;
    }
    Completion::Used(f.used_len.unwrap_or(used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pktaccel_abi::{OP_COPY, OP_CSUM, STATUS_DEVICE_ERROR};
    use vm_memory::GuestMemoryMmap;

    fn req(op: u16, used: u32) -> Processed {
        Processed {
            queue: 0,
            op: Some(op),
            status_addr: Some(0x100),
            used,
        }
    }

    #[test]
    fn each_request_fault_changes_the_completion() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        let none = Faults::new();
        assert_eq!(
            after_request(&none, &mem, req(OP_CSUM, 80)),
            Completion::Used(80)
        );

        let f = Faults::from_specs(&["status=device-error,op=csum"]).unwrap();
        assert_eq!(
            after_request(&f, &mem, req(OP_CSUM, 80)),
            Completion::Used(16)
        );
        let rec: [u8; 16] = mem.read_obj(GuestAddress(0x100)).unwrap();
        assert_eq!(
            StatusRecord::from_le_bytes(&rec).unwrap().status,
            STATUS_DEVICE_ERROR
        );
        assert_eq!(
            after_request(&f, &mem, req(OP_COPY, 80)),
            Completion::Used(80)
        );
        let unanswered = Processed {
            status_addr: None,
            used: 0,
            ..req(OP_CSUM, 0)
        };
        assert_eq!(after_request(&f, &mem, unanswered), Completion::Used(0));

        let f = Faults::from_specs(&["drop,count=1"]).unwrap();
        assert_eq!(
            after_request(&f, &mem, req(OP_CSUM, 16)),
            Completion::Dropped
        );
        assert_eq!(
            after_request(&f, &mem, req(OP_CSUM, 16)),
            Completion::Used(16)
        );

        let f = Faults::from_specs(&["used-len=4096", "delay=20ms"]).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(
            after_request(&f, &mem, req(OP_CSUM, 16)),
            Completion::Used(4096)
        );
        assert!(t.elapsed() >= std::time::Duration::from_millis(20));
    }
}
