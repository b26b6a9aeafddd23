//! The process's allocator: jemalloc for Rust and, through its unprefixed
//! `malloc`, for the bundled SQLite too.
//!
//! Why jemalloc: glibc's malloc (arena locks, `malloc_consolidate`) was the
//! largest single cost of an uncached page, where every row's values are
//! copied out of the database. mimalloc, used before, spent a quarter of the
//! server's CPU on PostgreSQL pages collecting frees made on other threads
//! (tokio moves tasks between workers); with jemalloc, alternating runs of
//! `cargo bench --bench load` gave scenario 1 on PostgreSQL 751, 689 ->
//! 870, 924 req/s, on SQLite 1152, 1198 -> 1355, 1394.

use std::alloc::{GlobalAlloc, Layout};

use tikv_jemallocator::Jemalloc;

/// Zeroed blocks up to this size are zeroed with `memset`; larger ones are
/// left to jemalloc, whose fresh pages are zero already and cost nothing
/// until touched.
///
/// jemalloc zeroes a reused block of 16 KiB or more by handing its pages back
/// to the kernel (`MADV_DONTNEED`) instead of writing zeros, so each page
/// faults again on first use, and every such fault and hand-back in a
/// multi-threaded process interrupts the other cores to flush their TLBs.
/// A compressed response allocates its encoder's tables zeroed (gzip
/// 45-100 KiB blocks, brotli 644 KiB ones): that path was over a third of the
/// server's CPU under clients that accept compression.
const MEMSET_ZEROED_UP_TO: usize = 1 << 20;

pub struct Allocator;

// SAFETY: every call forwards to jemalloc with the caller's layout; the only
// addition writes zeros within a block jemalloc just returned for `layout`.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { Jemalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MEMSET_ZEROED_UP_TO {
            return unsafe { Jemalloc.alloc_zeroed(layout) };
        }
        let ptr = unsafe { Jemalloc.alloc(layout) };
        if !ptr.is_null() {
            unsafe { ptr.write_bytes(0, layout.size()) };
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { Jemalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { Jemalloc.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block handed out again after holding other data must come back
    /// zeroed, on both sides of the size where zeroing changes hands.
    #[test]
    fn reused_blocks_come_back_zeroed() {
        for size in [
            64,
            16 << 10,
            100 << 10,
            MEMSET_ZEROED_UP_TO,
            MEMSET_ZEROED_UP_TO + 4096,
        ] {
            let layout = Layout::from_size_align(size, 16).expect("layout");
            for _ in 0..4 {
                // SAFETY: each block is written within its layout and freed once.
                unsafe {
                    let dirty = Allocator.alloc(layout);
                    assert!(!dirty.is_null());
                    dirty.write_bytes(0xa5, size);
                    Allocator.dealloc(dirty, layout);
                    let zeroed = Allocator.alloc_zeroed(layout);
                    assert!(!zeroed.is_null());
                    let bytes = std::slice::from_raw_parts(zeroed, size);
                    assert!(bytes.iter().all(|&b| b == 0), "{size} bytes not zeroed");
                    Allocator.dealloc(zeroed, layout);
                }
            }
        }
    }
}
