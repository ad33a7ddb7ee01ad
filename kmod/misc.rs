// SPDX-License-Identifier: GPL-2.0
//! A misc-device registration whose file operations add `poll`.
//!
//! The kernel crate's `MiscDevice` vtable (7.3) has open, release, mmap,
//! ioctl, read/write and fdinfo, but no `poll`. This registration takes the
//! crate's own `file_operations` for `T` unchanged (so every other entry
//! point keeps its safe wrapper) and only adds a `poll` entry that borrows
//! the file's private data exactly the way the crate's `ioctl` entry does.

use core::marker::PhantomData;
use kernel::{
    bindings,
    error::to_result,
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
    sync::poll::PollTable,
    types::{ForeignOwnable, Opaque},
};

/// `poll` for a [`MiscDevice`].
pub(crate) trait MiscPoll: MiscDevice {
    /// Data the registration carries for `open` to find.
    type RegData: Send + Sync;

    /// Returns the `EPOLL*` mask and registers `table` on the file's wait
    /// queue(s).
    fn poll(
        device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        file: &File,
        table: PollTable<'_>,
    ) -> u32;
}

struct PollVTable<T>(PhantomData<T>);

impl<T: MiscPoll> PollVTable<T> {
    /// The crate's file operations for `T`, plus `poll`.
    const FOPS: bindings::file_operations = bindings::file_operations {
        poll: Some(Self::poll),
        // SAFETY: `into_raw` sets `fops` to a reference to the crate's
        // `'static` constant vtable for `T`; reading it in const evaluation
        // copies a valid, initialised `file_operations`.
        ..unsafe { *MiscDeviceOptions { name: c"pktaccel" }.into_raw::<T>().fops }
    };

    /// # Safety
    ///
    /// `file` must be a file opened through a registration of `T` (so its
    /// private data is the `T::Ptr` stored by the crate's `open`, which is
    /// released only by `release`, after the last `poll`), and `pt` must be
    /// null or a valid poll table for the duration of the call.
    unsafe extern "C" fn poll(
        file: *mut bindings::file,
        pt: *mut bindings::poll_table_struct,
    ) -> bindings::__poll_t {
        // SAFETY: `file` is valid for the call (caller); `poll` may read
        // the private data.
        let private = unsafe { (*file).private_data };
        // SAFETY: set with `into_foreign` by the crate's `open` and not yet
        // passed to `from_foreign` (that happens in `release`, which cannot
        // run while a `poll` call holds the file), as for its `ioctl`.
        let device = unsafe { <T::Ptr as ForeignOwnable>::borrow(private) };
        // SAFETY: the file is valid for the duration of this call and no
        // fdget_pos region is active on it in this thread.
        let f = unsafe { File::from_raw_file(file) };
        // SAFETY: `pt` is null or valid for the call (caller).
        let table = unsafe { PollTable::from_raw(pt) };
        T::poll(device, f, table)
    }
}

/// A registered misc device with `poll`; deregistered on drop.
///
/// # Invariants
///
/// `inner` is a `miscdevice` registered with `misc_register()` whose fops
/// are `PollVTable::<T>::FOPS`, until `drop`.
#[pin_data(PinnedDrop)]
pub(crate) struct PollMiscRegistration<T: MiscPoll> {
    #[pin]
    inner: Opaque<bindings::miscdevice>,
    data: T::RegData,
}

// SAFETY: `misc_register`/`misc_deregister` may be called from any thread,
// and `data` is `Send`.
unsafe impl<T: MiscPoll> Send for PollMiscRegistration<T> {}
// SAFETY: `&self` only exposes `data`, which is `Sync`.
unsafe impl<T: MiscPoll> Sync for PollMiscRegistration<T> {}

impl<T: MiscPoll> PollMiscRegistration<T> {
    /// Registers `/dev/<name>`.
    pub(crate) fn register(name: &'static CStr, data: T::RegData) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            data,
            inner <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                let mut raw = MiscDeviceOptions { name }.into_raw::<T>();
                raw.fops = &PollVTable::<T>::FOPS;
                // SAFETY: the initializer may write to `slot`.
                unsafe { slot.write(raw) };
                // SAFETY: `slot` holds a valid miscdevice; it is pinned and
                // deregistered in `drop` before its memory goes away.
                to_result(unsafe { bindings::misc_register(slot) })
            }),
        })
    }

    /// The data of the registration a file of `T` was opened through.
    pub(crate) fn data_of(misc: &MiscDeviceRegistration<T>) -> &T::RegData {
        let raw = misc.as_raw();
        // SAFETY: every `miscdevice` whose fops are `PollVTable::<T>::FOPS`
        // (the only way `T`'s `open` is reached) is the `inner` field of a
        // pinned `PollMiscRegistration<T>`; `misc_open` holds `misc_mtx`
        // across `open`, so the registration cannot be dropped meanwhile,
        // and the returned borrow is tied to `misc`, i.e. to that call.
        unsafe {
            let this = kernel::container_of!(Opaque::cast_from(raw).cast_mut(), Self, inner);
            &(*this).data
        }
    }
}

#[pinned_drop]
impl<T: MiscPoll> PinnedDrop for PollMiscRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: registered by the type invariant; deregistered once here.
        unsafe { bindings::misc_deregister(self.inner.get()) };
    }
}
