//! A global allocator with a budget, for test binaries that load hostile
//! input: once more than [`BUDGET`] bytes are live it refuses (returns
//! null). An infallible allocation beyond it then aborts the test binary —
//! the test fails, the machine does not swap or get OOM-killed — and a
//! fallible one (`try_reserve`) must come back as an error.
//!
//! Include it with `#[path = "common/budget.rs"] mod budget;` (it installs
//! itself as the binary's `#[global_allocator]`).
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Live bytes the whole test binary may hold (its tests run in parallel).
pub const BUDGET: usize = 1 << 30;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Reserves `n` more live bytes, or refuses without ever counting them: a
/// refused huge request must not make a concurrent small one look over
/// the budget (adding first and taking back after did, and aborted other
/// tests of the binary now and then).
fn reserve(n: usize) -> bool {
    LIVE.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |live| {
        live.checked_add(n).filter(|&total| total <= BUDGET)
    })
    .is_ok()
}

struct Budget;

// SAFETY: forwards to the system allocator; refusing (null) is allowed by
// the `GlobalAlloc` contract.
unsafe impl GlobalAlloc for Budget {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !reserve(new_size - old) {
            return std::ptr::null_mut();
        }
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            if new_size > old {
                LIVE.fetch_sub(new_size - old, Ordering::SeqCst);
            }
        } else if new_size < old {
            LIVE.fetch_sub(old - new_size, Ordering::SeqCst);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Budget = Budget;
