//! The event channel's library side, in one place: hooks call the entry points below, records
//! are formatted and folded in `events`/`fold`, and leave through `out` only.
//!
//! ```text
//! hooks ──record / record_lookup / unguarded──▶ events ──first of its kind──▶ out::send ──▶ launcher
//!                                                  └─repeat──▶ fold: +1 in a shared counter
//! state (start, fork) ──process_started──▶ events ──▶ out::check_in ──▶ shared area or out::send
//! hooks::send (sendto) ──repeat of the thread's last allowed send──▶ repeat: +1, nothing else
//! ```
//!
//! The wire format (framing, key, bodies, check-in area) is in docs/design.md, *The event
//! channel's wire format*, and `egress_policy::event`.

mod events;
mod fold;
mod out;
pub mod repeat;

pub use events::{kernel_layer, process_started, record, record_lookup, unguarded, Attempt, Kind};
pub use out::{check_in, lost};

/// In a forked child, before its check-in: the parent's folded attempts, remembered sends and
/// scratch area are the parent's; this process starts its own lines.
pub fn forked() {
    fold::reset();
    repeat::invalidate();
    events::forked();
}
