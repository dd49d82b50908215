//! Reading the C arrays the hooks receive: NULL-terminated arrays of NUL-terminated strings
//! (`argv`, `envp`), without allocating.

use libc::c_char;

/// The entries of a NULL-terminated array of pointers, up to the terminator.
///
/// # Safety
/// `array` must be null or a NULL-terminated array of pointers that stays valid while the
/// iterator is used.
pub unsafe fn entries(array: *const *const c_char) -> impl Iterator<Item = *const c_char> {
    let mut at = array;
    std::iter::from_fn(move || {
        if at.is_null() {
            return None;
        }
        // SAFETY: within the NULL-terminated array, per the caller.
        let entry = unsafe { *at };
        if entry.is_null() {
            return None;
        }
        // SAFETY: the next slot exists because this one was not the terminator.
        at = unsafe { at.add(1) };
        Some(entry)
    })
}

/// The strings of a NULL-terminated array of NUL-terminated strings, as bytes.
///
/// # Safety
/// As for `entries`, and every string must stay valid and unchanged while the iterator is used.
pub unsafe fn c_strings<'a>(array: *const *const c_char) -> impl Iterator<Item = &'a [u8]> {
    // SAFETY: the caller's array, per this function's contract.
    unsafe { entries(array) }
        // SAFETY: each entry is a NUL-terminated string that outlives the iterator's use.
        .map(|s| unsafe { std::ffi::CStr::from_ptr(s) }.to_bytes())
}
