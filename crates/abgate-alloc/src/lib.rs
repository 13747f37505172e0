//! abgate's global allocator: mimalloc (v3, through `libmimalloc-sys`), asked for plain
//! `mi_malloc` whenever malloc's own alignment already satisfies the layout.
//!
//! Why this crate exists (the one place abgate allows `unsafe`): the `mimalloc` crate's
//! `GlobalAlloc` sends every request to `mi_malloc_aligned`. mimalloc v3 only takes its
//! fast path there for blocks up to 1 KiB whose free block happens to be aligned, and
//! sends everything else through an over-allocating generic path that also marks the page
//! as holding interior pointers. A proxied request makes ~90 allocations, ~16 of them on
//! that path (pingora's buffers and boxed futures are larger than 1 KiB). Measured under
//! callgrind (docs/performance.md): see the figures there. The same change is proposed
//! upstream (purpleprotocol/mimalloc_rust pull request 170).
//!
//! The rule is C's `malloc` guarantee, which mimalloc keeps: a block is aligned to
//! `min(16, the largest power of two dividing its size)`, because every page's first block
//! starts 16-aligned and size classes are multiples of 8 bytes, and of 16 bytes for
//! requests that are. So `align <= 16 && size % align == 0` needs no aligned API; any
//! other layout (over-aligned types, hand-made layouts) still gets `mi_malloc_aligned`.
//! The tests below check the alignment of every result over sizes and alignments.

#![deny(unsafe_op_in_unsafe_fn)]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use libmimalloc_sys as mi;

/// `MI_MAX_ALIGN_SIZE`: the largest alignment plain `mi_malloc` provides.
const MALLOC_ALIGN: usize = 16;

/// mimalloc as the global allocator (see the module documentation).
pub struct MiMalloc;

#[inline(always)]
fn plain(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && size.is_multiple_of(align)
}

// SAFETY: every method forwards to mimalloc, which returns null or a block of at least the
// requested size; `plain` only routes a layout to the unaligned entry points when
// mimalloc's malloc alignment already satisfies it (module documentation, tested below).
// `mi_free` and `mi_realloc*` accept any pointer from either family.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls with a size and a power-of-two alignment.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_malloc(layout.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_zalloc(layout.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc contract).
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (GlobalAlloc contract); the
        // new block keeps `layout.align()` by the same rule as `alloc`.
        unsafe {
            if plain(layout.align(), new_size) {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routing rule itself: only what C's malloc guarantees goes to `mi_malloc`.
    #[test]
    fn only_malloc_guaranteed_layouts_skip_the_aligned_api() {
        assert!(plain(8, 24) && plain(16, 48) && plain(1, 1) && plain(16, 4096));
        // a 24-byte size class can hold a 16-aligned type only by luck
        assert!(!plain(16, 24));
        // over-aligned types (cache-line padded cells, page-aligned buffers)
        assert!(!plain(32, 64) && !plain(64, 64) && !plain(128, 1024) && !plain(4096, 4096));
    }

    /// Every size up to 8 KiB and a spread of larger ones, with every alignment up to 4 KiB,
    /// many blocks each (so blocks further into a page are checked too); then reallocation
    /// across sizes keeps the alignment and the contents.
    #[test]
    fn every_result_is_aligned_and_usable() {
        let a = MiMalloc;
        let sizes: Vec<usize> = (1..=8192)
            .chain((8192..(1 << 20)).step_by(4093))
            .chain([1 << 20, 3 << 20, 5 << 20])
            .collect();
        for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for &size in &sizes {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                let n = if size <= 4096 { 24 } else { 2 };
                let mut blocks = Vec::with_capacity(n);
                for i in 0..n {
                    // SAFETY: non-zero size; freed below with the same layout.
                    let p = unsafe {
                        if i % 2 == 0 {
                            a.alloc(layout)
                        } else {
                            a.alloc_zeroed(layout)
                        }
                    };
                    assert!(!p.is_null(), "size {size} align {align}");
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    // SAFETY: `p` points to at least `size` writable bytes.
                    unsafe {
                        if i % 2 == 1 {
                            assert_eq!(*p, 0);
                            assert_eq!(*p.add(size - 1), 0);
                        }
                        p.write(0xA5);
                        p.add(size - 1).write(0x5A);
                    }
                    blocks.push(p);
                }
                for p in blocks {
                    // SAFETY: allocated above with `layout`.
                    unsafe { a.dealloc(p, layout) };
                }
            }
        }
    }

    #[test]
    fn realloc_keeps_alignment_and_contents() {
        let a = MiMalloc;
        for align in [1usize, 8, 16, 64] {
            let layout = Layout::from_size_align(align, align).unwrap();
            // SAFETY: non-zero size.
            let mut p = unsafe { a.alloc(layout) };
            let mut size = align;
            // SAFETY: `p` holds `size` bytes.
            unsafe { p.write(7) };
            while size < (1 << 21) {
                let new_size = size * 3 - size / 2;
                let new_size = new_size.next_multiple_of(align);
                // SAFETY: `p` came from `a` with this alignment and `size`.
                p = unsafe {
                    a.realloc(p, Layout::from_size_align(size, align).unwrap(), new_size)
                };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {new_size} align {align}");
                // SAFETY: the first byte is kept by realloc.
                assert_eq!(unsafe { *p }, 7);
                size = new_size;
            }
            // SAFETY: allocated with this layout.
            unsafe { a.dealloc(p, Layout::from_size_align(size, align).unwrap()) };
        }
    }
}
