//! Whether the program's memory can be read without faulting, as the kernel would find out.
//!
//! The hooks read the caller's `sockaddr`, `msghdr`, iovec array, control data, `mmsghdr`
//! entries, a payload's first bytes and `setsockopt` values where the kernel would copy them
//! and answer `EFAULT` for memory it cannot read. `sock::plausible` rules out what cannot be
//! user memory without a system call; a page inside the user range may still be unmapped or
//! `PROT_NONE`. `readable` asks the kernel about each page once: it is probed with a system call
//! that copies 8 bytes from it and has no other effect (`rt_sigprocmask` with an invalid `how`:
//! the kernel copies the set first, answering `EFAULT`, then refuses the `how` with `EINVAL`),
//! and remembered in a small lock-free table. A program that sends again and again from the
//! same buffers (the fast path) finds its pages there: no system call.
//!
//! The table is process-wide (mappings are), direct-mapped, one atomic word per entry: a
//! lookup is one load and a compare; a miss probes and stores. Nothing allocates or locks, so
//! it is safe in signal handlers and after fork (a forked child has the same mappings).
//!
//! The window left: a page remembered as readable and then unmapped or made unreadable by the
//! program (`munmap`, `mprotect`) is still read by the guard, which faults (`SIGSEGV`) where
//! the kernel would answer `EFAULT` — a use-after-unmap, until another page takes its entry.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::sock::plausible;

const PAGE_SHIFT: u32 = 12;
const ENTRIES_LOG2: u32 = 8;
const ENTRIES: usize = 1 << ENTRIES_LOG2;

/// Page numbers known readable (0: empty; page 0 is never plausible).
static KNOWN: [AtomicUsize; ENTRIES] = [const { AtomicUsize::new(0) }; ENTRIES];

#[inline]
fn entry(page: usize) -> &'static AtomicUsize {
    // Fibonacci hashing: neighbouring pages land in different entries.
    let hash = (page as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - ENTRIES_LOG2);
    &KNOWN[hash as usize]
}

/// Whether the `len` bytes at `p` are user memory the program can read: `sock::plausible`,
/// and every page they touch is readable (remembered, or probed once). Inlined: a range within
/// one remembered page costs a few compares and one load.
#[inline]
pub fn readable<T>(p: *const T, len: usize) -> bool {
    if !plausible(p, len) {
        return false;
    }
    if len == 0 {
        return true;
    }
    let addr = p as usize;
    // No overflow: `plausible` checked addr + len.
    let (first, last) = (addr >> PAGE_SHIFT, (addr + (len - 1)) >> PAGE_SHIFT);
    if first == last && entry(first).load(Ordering::Relaxed) == first {
        return true;
    }
    pages_readable(first, last)
}

/// Pages `first..=last` (4 KiB steps: with larger pages each is still probed within its page),
/// each remembered or probed.
#[cold]
#[inline(never)]
fn pages_readable(first: usize, last: usize) -> bool {
    (first..=last).all(page_readable)
}

fn page_readable(page: usize) -> bool {
    let slot = entry(page);
    if slot.load(Ordering::Relaxed) == page {
        return true;
    }
    match probe(page << PAGE_SHIFT) {
        Probe::Readable => {
            slot.store(page, Ordering::Relaxed);
            true
        }
        Probe::Fault => false,
        // The kernel would not say (a seccomp filter): read as before, remember nothing.
        Probe::Unknown => true,
    }
}

enum Probe {
    Readable,
    Fault,
    Unknown,
}

/// Asks the kernel whether the 8 bytes at `addr` (a page start) can be copied, without side
/// effects: `rt_sigprocmask(how = 3 (invalid), set = addr, NULL, 8)` copies the set and then
/// fails with `EINVAL`; an unreadable set fails with `EFAULT` first.
fn probe(addr: usize) -> Probe {
    const INVALID_HOW: usize = 3;
    let ret = raw_sigprocmask(INVALID_HOW, addr);
    if ret == -(libc::EINVAL as isize) {
        Probe::Readable
    } else if ret == -(libc::EFAULT as isize) {
        Probe::Fault
    } else {
        Probe::Unknown
    }
}

/// The system call itself, returning `-errno` (no libc: errno stays the caller's, and libc's
/// `syscall` is one of the guard's hooks).
#[cfg(target_arch = "x86_64")]
fn raw_sigprocmask(how: usize, set: usize) -> isize {
    let ret: isize;
    // SAFETY: rt_sigprocmask with an invalid `how` only copies 8 bytes from `set` (or fails
    // to) and changes nothing; the kernel reads user memory safely; no oldset is written.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_rt_sigprocmask as isize => ret,
            in("rdi") how,
            in("rsi") set,
            in("rdx") 0usize,
            in("r10") 8usize,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(target_arch = "aarch64")]
fn raw_sigprocmask(how: usize, set: usize) -> isize {
    let ret: isize;
    // SAFETY: as on x86-64.
    unsafe {
        core::arch::asm!(
            "svc 0",
            in("x8") libc::SYS_rt_sigprocmask as usize,
            inlateout("x0") how => ret,
            in("x1") set,
            in("x2") 0usize,
            in("x3") 8usize,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn raw_sigprocmask(_how: usize, _set: usize) -> isize {
    -1 // EPERM: unknown, read as before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_memory_is_readable_and_remembered() {
        let local = [0u8; 64];
        assert!(readable(local.as_ptr(), local.len()));
        let page = local.as_ptr() as usize >> PAGE_SHIFT;
        assert_eq!(entry(page).load(Ordering::Relaxed), page);
        assert!(readable(local.as_ptr(), 0));
    }

    #[test]
    fn unmapped_and_protnone_pages_are_not() {
        // SAFETY: a fresh private anonymous mapping of two pages, used only here.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let base = p as usize;
        // SAFETY: the second page of our own mapping.
        let rc = unsafe { libc::mprotect((base + 4096) as *mut _, 4096, libc::PROT_NONE) };
        assert_eq!(rc, 0);
        assert!(readable(base as *const u8, 16));
        assert!(!readable((base + 4096) as *const u8, 16));
        // A range that starts readable and runs into the PROT_NONE page.
        assert!(!readable((base + 4090) as *const u8, 16));
        // SAFETY: our own mapping, unmapped whole. (Not probed afterwards: another test
        // thread may map the freed range at once. test_bad_pointers.py covers unmapped pages.)
        assert_eq!(unsafe { libc::munmap(p, 8192) }, 0);
    }

    #[test]
    fn a_failed_probe_keeps_errno() {
        // SAFETY: errno is this thread's.
        unsafe { *libc::__errno_location() = 1234 };
        assert!(!readable(0xffff_8000_0000_0000usize as *const u8, 1));
        assert!(probe(4096).is_fault());
        // SAFETY: as above.
        assert_eq!(unsafe { *libc::__errno_location() }, 1234);
    }

    impl Probe {
        fn is_fault(&self) -> bool {
            matches!(self, Probe::Fault)
        }
    }
}
