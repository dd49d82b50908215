//! Large buffers for one call, off the stack. Hooks run on whatever stack the program gives
//! them (16 KiB thread stacks, 8 KiB signal stacks), so the exec hooks' path and file buffers
//! and the longer event records live in a private anonymous mapping made for the call and
//! unmapped after it: two plain system calls, safe in `vfork` children and signal handlers,
//! and small next to the exec or spawn they serve. (docs/design.md, *Stack use*.)

use std::ops::{Deref, DerefMut};

/// A type whose all-zero bytes are a valid value (what a fresh anonymous mapping holds).
///
/// # Safety
/// Implement only for types valid when zero-filled.
pub unsafe trait Zeroed {}

// SAFETY: byte arrays are valid for any bytes, zero included.
unsafe impl<const N: usize> Zeroed for [u8; N] {}

/// One `T` in a mapping of its own, zero-filled, unmapped when dropped.
pub struct Scratch<T: Zeroed> {
    ptr: *mut T,
}

impl<T: Zeroed> Scratch<T> {
    /// None when the mapping cannot be made (the caller falls back, or fails closed).
    pub fn new() -> Option<Self> {
        // SAFETY: a fresh private anonymous mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<T>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED).then_some(Scratch { ptr: p.cast() })
    }
}

impl<T: Zeroed> Deref for Scratch<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: ptr is a live mapping of size_of::<T>() zero-filled (valid, see Zeroed),
        // page-aligned bytes, owned by this Scratch alone.
        unsafe { &*self.ptr }
    }
}

impl<T: Zeroed> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for deref; &mut self makes the access exclusive.
        unsafe { &mut *self.ptr }
    }
}

impl<T: Zeroed> Drop for Scratch<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of that size, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), std::mem::size_of::<T>()) };
    }
}
