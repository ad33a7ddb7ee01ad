//! Where the faults meet the request path: [`Faults`] is the device's
//! [`CompletionHook`], consulted once per finished request before its
//! completion is visible to the driver (delay, error status, drop, wrong
//! used length, false status length, bogus used element, death). The interrupt and reset faults are asked by the
//! backend directly ([`Faults::lose_interrupt`],
//! [`Faults::spurious_interrupt`], [`Faults::on_ring_stop`]).

use tracing::error;

use super::Faults;
use crate::completion::{Completion, CompletionHook, Decision};

impl CompletionHook for Faults {
    fn decide(&self, c: &Completion) -> Decision {
        if !self.active() {
            return Decision::default();
        }
        let f = self.on_request(c.queue as u16, c.op);
        if let Some(id) = f.die {
            let spec = self.describe(id);
            error!(queue = c.queue, fault = %spec, "injected death: the device stops now");
            eprintln!(
                "pktaccel-device: fault \"{spec}\" fired: exiting as a dead device (status 3)"
            );
            std::process::exit(3);
        }
        Decision {
            delay: (!f.delay.is_zero()).then_some(f.delay),
            status: f.status,
            used_len: f.used_len,
            drop: f.drop,
            status_len: f.status_len,
            bogus_used: f.bogus_used,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pktaccel_abi::{OP_COPY, OP_CSUM, STATUS_DEVICE_ERROR, STATUS_OK};
    use std::time::Duration;

    fn done(op: u16) -> Completion {
        Completion {
            queue: 0,
            head: 3,
            op: Some(op),
            status: Some(STATUS_OK),
            used_len: 80,
        }
    }

    #[test]
    fn each_request_fault_becomes_a_decision() {
        assert_eq!(Faults::new().decide(&done(OP_CSUM)), Decision::default());
        let f = Faults::from_specs(&["status=device-error,op=csum"]).unwrap();
        assert_eq!(f.decide(&done(OP_CSUM)).status, Some(STATUS_DEVICE_ERROR));
        assert_eq!(f.decide(&done(OP_COPY)), Decision::default());
        let f = Faults::from_specs(&["drop,count=1"]).unwrap();
        assert!(f.decide(&done(OP_CSUM)).drop);
        assert!(!f.decide(&done(OP_CSUM)).drop);
        let f = Faults::from_specs(&["used-len=4096", "delay=20ms"]).unwrap();
        let d = f.decide(&done(OP_CSUM));
        assert_eq!(d.used_len, Some(4096));
        assert_eq!(d.delay, Some(Duration::from_millis(20)));
        let f = Faults::from_specs(&["status-len=99", "bogus-used=out-of-range"]).unwrap();
        let d = f.decide(&done(OP_COPY));
        assert_eq!(d.status_len, Some(99));
        assert_eq!(d.bogus_used, Some(crate::completion::BogusUsed::OutOfRange));
    }
}
