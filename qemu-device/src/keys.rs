//! AES key slots, installed and erased by KEY_SET / KEY_CLEAR requests.
//!
//! Keys are kept expanded (the AES key schedule and GHASH key are computed
//! once at KEY_SET). Each slot has its own lock; a request clones the `Arc`
//! and releases the lock before doing any crypto, so a KEY_SET on one queue
//! never waits behind a long seal on another.

use std::sync::{Arc, RwLock};

use crate::engines::gcm::{self, GcmKey};
use pktaccel_abi::AES256_KEY_LEN;

/// The slot is out of range or empty (STATUS_NO_KEY).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("key slot {0} is out of range or holds no key")]
pub struct NoKey(pub u32);

/// A fixed number of key slots.
pub struct KeySlots {
    slots: Vec<RwLock<Option<Arc<GcmKey>>>>,
}

impl std::fmt::Debug for KeySlots {
    /// Shows which slots are loaded, never key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loaded: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.get(i as u32).is_ok())
            .collect();
        f.debug_struct("KeySlots")
            .field("slots", &self.slots.len())
            .field("loaded", &loaded)
            .finish()
    }
}

impl KeySlots {
    /// `n` empty slots.
    pub fn new(n: u32) -> Self {
        Self {
            slots: (0..n).map(|_| RwLock::new(None)).collect(),
        }
    }

    /// Number of slots.
    pub fn len(&self) -> u32 {
        self.slots.len() as u32
    }

    /// True when the device has no key slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn slot(&self, slot: u32) -> Result<&RwLock<Option<Arc<GcmKey>>>, NoKey> {
        self.slots.get(slot as usize).ok_or(NoKey(slot))
    }

    /// Installs `key` into `slot`, replacing any key there.
    pub fn set(&self, slot: u32, key: &[u8; AES256_KEY_LEN]) -> Result<(), NoKey> {
        let expanded = Arc::new(gcm::key(key));
        *self.slot(slot)?.write().unwrap_or_else(|e| e.into_inner()) = Some(expanded);
        Ok(())
    }

    /// Erases `slot` (erasing an empty slot is not an error).
    pub fn clear(&self, slot: u32) -> Result<(), NoKey> {
        *self.slot(slot)?.write().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    /// The key in `slot`.
    pub fn get(&self, slot: u32) -> Result<Arc<GcmKey>, NoKey> {
        self.slot(slot)?
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(NoKey(slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_clear_and_range() {
        let k = KeySlots::new(4);
        assert_eq!(k.get(0).err(), Some(NoKey(0)));
        k.set(3, &[7; 32]).unwrap();
        assert!(k.get(3).is_ok());
        assert_eq!(k.set(4, &[7; 32]), Err(NoKey(4)));
        assert_eq!(k.get(u32::MAX).err(), Some(NoKey(u32::MAX)));
        k.clear(3).unwrap();
        assert_eq!(k.get(3).err(), Some(NoKey(3)));
        assert_eq!(k.clear(3), Ok(()));
        assert_eq!(k.clear(9), Err(NoKey(9)));
    }
}
