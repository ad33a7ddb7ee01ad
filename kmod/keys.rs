// SPDX-License-Identifier: GPL-2.0
//! Per-file AES key-slot namespaces over the device's shared key slots.
//!
//! The device has `key_slots` slots shared by everyone. Each open file
//! sees its own *virtual* slots `0..key_slots`: KEY_SET on a virtual slot
//! the file does not hold yet takes a free device slot, and every request
//! that names a key has its header's `key_slot` rewritten to the device
//! slot before the device sees it. A file can only name slots it installed
//! (`ENOKEY` otherwise), and its slots are cleared on the device when it
//! closes. A device slot is handed to another file only once a KEY_CLEAR
//! of it has completed and no request naming it is in flight, so no
//! request of one file can ever run with another file's key, whatever
//! order the device's queues complete in.

use kernel::prelude::*;

use crate::abi;

/// One device slot.
#[derive(Clone, Copy, Default)]
struct DevSlot {
    /// Id of the owning file (0: none).
    owner: u64,
    /// The owner's virtual slot number.
    vslot: u32,
    /// A KEY_SET may have reached it: it may hold a key.
    dirty: bool,
    /// A KEY_CLEAR is in flight (or failed): not reusable yet.
    clearing: bool,
    /// Requests in flight that name this slot.
    users: u32,
    /// Bumped on every claim, so a failed submit can tell whether anyone
    /// else used the slot since it claimed it.
    gen: u32,
}

impl DevSlot {
    fn is_free(&self) -> bool {
        self.owner == 0 && !self.clearing && !self.dirty && self.users == 0
    }
}

/// A claim on a device slot by one request, returned by
/// [`KeyTable::claim`] and ended by [`KeyTable::complete`] (the request
/// completed) or [`KeyTable::unclaim`] (it never reached the device).
#[derive(Clone, Copy)]
pub(crate) struct KeyClaim {
    pub(crate) dev: u32,
    op: u16,
    vslot: u32,
    owner: u64,
    fresh: bool,
    gen: u32,
}

/// All device slots of one device.
pub(crate) struct KeyTable {
    slots: KVec<DevSlot>,
}

/// Whether `op` names a key slot.
pub(crate) fn uses_key(op: u16) -> bool {
    matches!(
        op,
        abi::OP_AES_GCM_SEAL | abi::OP_AES_GCM_OPEN | abi::OP_KEY_SET | abi::OP_KEY_CLEAR
    )
}

impl KeyTable {
    pub(crate) fn new(n: u32) -> Result<Self> {
        let mut slots = KVec::with_capacity(n as usize, GFP_KERNEL)?;
        for _ in 0..n {
            slots.push(DevSlot::default(), GFP_KERNEL)?;
        }
        Ok(KeyTable { slots })
    }

    fn find(&self, owner: u64, vslot: u32) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.owner == owner && s.vslot == vslot)
    }

    /// Claims the device slot for a request of file `owner` with `op` on
    /// virtual slot `vslot`: `EINVAL` for a KEY_SET beyond the device's
    /// slots, `ENOSPC` when a KEY_SET finds no free device slot, `ENOKEY`
    /// for a SEAL/OPEN/KEY_CLEAR naming a slot the file has not installed.
    pub(crate) fn claim(&mut self, owner: u64, op: u16, vslot: u32) -> Result<KeyClaim> {
        let n = self.slots.len() as u32;
        let found = if vslot < n {
            self.find(owner, vslot)
        } else {
            None
        };
        let (i, fresh) = match (op, found) {
            (abi::OP_KEY_SET, _) if vslot >= n => return Err(EINVAL),
            (abi::OP_KEY_SET, Some(i)) => (i, false),
            (abi::OP_KEY_SET, None) => {
                let i = self.slots.iter().position(DevSlot::is_free).ok_or(ENOSPC)?;
                let s = &mut self.slots[i];
                s.owner = owner;
                s.vslot = vslot;
                (i, true)
            }
            (_, Some(i)) => (i, false),
            (_, None) => return Err(ENOKEY),
        };
        let s = &mut self.slots[i];
        s.users += 1;
        s.gen = s.gen.wrapping_add(1);
        match op {
            abi::OP_KEY_SET => s.dirty = true,
            abi::OP_KEY_CLEAR => {
                // The virtual slot is gone at once; the device slot is
                // reusable once the clear has completed.
                s.owner = 0;
                s.clearing = true;
            }
            _ => {}
        }
        Ok(KeyClaim {
            dev: i as u32,
            op,
            vslot,
            owner,
            fresh,
            gen: s.gen,
        })
    }

    /// Undoes `c` for a request that never reached the device.
    pub(crate) fn unclaim(&mut self, c: KeyClaim) {
        let Some(s) = self.slots.get_mut(c.dev as usize) else {
            return;
        };
        s.users = s.users.saturating_sub(1);
        let untouched = s.gen == c.gen;
        match c.op {
            abi::OP_KEY_SET if c.fresh && untouched && s.users == 0 => {
                // Nobody else used it since we took it: no key was sent.
                *s = DevSlot {
                    gen: s.gen,
                    ..Default::default()
                };
            }
            abi::OP_KEY_CLEAR if s.clearing && s.owner == 0 => {
                // The key is still on the device: give it back to its
                // owner (so close clears it) unless the owner installed
                // that virtual slot elsewhere meanwhile, in which case
                // it stays owned under a number no request can name and
                // close clears it all the same.
                let taken = self
                    .slots
                    .iter()
                    .any(|o| o.owner == c.owner && o.vslot == c.vslot);
                let s = &mut self.slots[c.dev as usize];
                s.clearing = false;
                s.owner = c.owner;
                s.vslot = if taken { u32::MAX } else { c.vslot };
            }
            _ => {}
        }
    }

    /// A request holding `c` completed with `status`. A KEY_CLEAR that
    /// the device did not carry out (device error, or the device died)
    /// leaves its slot unusable: it may still hold the key.
    pub(crate) fn complete(&mut self, c: KeyClaim, status: u32) {
        let Some(s) = self.slots.get_mut(c.dev as usize) else {
            return;
        };
        s.users = s.users.saturating_sub(1);
        if c.op != abi::OP_KEY_CLEAR || !s.clearing {
            return;
        }
        match status {
            abi::STATUS_OK | abi::STATUS_NO_KEY => {
                s.clearing = false;
                s.dirty = false;
            }
            abi::STATUS_DEVICE_ERROR => {}
            _ if c.vslot != u32::MAX => {
                // The device refused this clear (a malformed request):
                // the key is still there. Hand the slot back to its owner
                // under a number no request can name, so close clears it.
                s.clearing = false;
                s.owner = c.owner;
                s.vslot = u32::MAX;
            }
            _ => {}
        }
    }

    /// Takes every device slot `owner` holds for clearing at close: each
    /// returned claim must be sent as a KEY_CLEAR or ended with
    /// `complete(claim, STATUS_DEVICE_ERROR)` (then the slot stays out of
    /// use for good).
    pub(crate) fn release(&mut self, owner: u64, out: &mut KVec<KeyClaim>) {
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.owner != owner {
                continue;
            }
            s.owner = 0;
            s.clearing = true;
            s.users += 1;
            s.gen = s.gen.wrapping_add(1);
            let c = KeyClaim {
                dev: i as u32,
                op: abi::OP_KEY_CLEAR,
                vslot: u32::MAX,
                owner,
                fresh: false,
                gen: s.gen,
            };
            // Capacity is reserved by the caller (one per device slot).
            if out.push_within_capacity(c).is_err() {
                // Unreachable; the slot then stays out of use for good.
                s.users -= 1;
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Device slots that hold a file's key, and ones out of use because a
    /// clear is pending or failed (debugfs).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let used = self.slots.iter().filter(|s| s.owner != 0).count();
        let clearing = self.slots.iter().filter(|s| s.clearing).count();
        (used, clearing)
    }
}
