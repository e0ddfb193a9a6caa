//! Memory per stored small resource (target: under 1 KiB), measured by counting the bytes the
//! allocator hands out while 100,000 resources are created.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use resources::{Resource, State};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    const COUNT: usize = 100_000;
    let s = State::new();
    // Warm the collection up so its fixed cost is not counted.
    let mut r = Resource::new("network", "AddressStatuses.net.talos.dev", "warm", 0u64);
    r.metadata.owner = "network.AddressStatusController".into();
    s.create(r).unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    // Resources made the way controllers make them; the state shares namespace and type.
    let owner: std::sync::Arc<str> = "network.AddressStatusController".into();
    for i in 0..COUNT {
        let id = format!("eth0/10.0.{}.{}/24", i / 256, i % 256);
        let mut r = Resource::new("network", "AddressStatuses.net.talos.dev", &id, i as u64);
        r.metadata.owner = owner.clone();
        s.create(r).unwrap();
    }
    let used = LIVE.load(Ordering::Relaxed) - before;
    let per = used as f64 / COUNT as f64;
    println!(
        "memory per small resource: {per:.0} bytes ({:.2} of the 1 KiB budget)",
        per / 1024.0
    );
}
