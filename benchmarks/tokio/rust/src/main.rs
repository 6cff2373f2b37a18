// SPDX-License-Identifier: MIT
//! Tokio's rt_multi_threaded benchmarks (tokio/benches/rt_multi_threaded.rs), with
//! the same parameters, on a multi-thread runtime of 1 or 2 workers, printing the
//! RESULT lines of weft's benchmarks so that benchmarks/tokio's C program can put
//! them beside the weft ports (tokio.c) and print ratios.
//!
//! One process measures one (bench, workers): an untimed warm-up iteration, then
//! --reps timed iterations; the median is printed as
//!   RESULT tokio impl=tokio bench=NAME workers=W tasks=N median_ns=... reps=R
//! Usage: weft-tokio-bench --bench NAME --workers W [--reps R] [--tiny] [--timeout S]
//! (--tiny divides the task counts by 10, to check that everything runs; an
//! iteration that takes over S seconds, default 10, ends the process with status 3:
//! with 1 or 2 workers, Tokio 1.24's spawn_many_remote_busy2 never finishes.)

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::runtime::{self, Runtime};

const STALL_DUR: Duration = Duration::from_micros(10);

struct Params {
    num_spawn: usize,   // spawn_many_*: 10 000 (busy2: 1 000)
    num_yield: usize,   // yield_many: 1 000 yields per task
    yield_tasks: usize, // yield_many: 200 tasks
    chain: usize,       // chained_spawn: 1 000
}

fn rt(workers: usize) -> Runtime {
    runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

fn stall() {
    let now = Instant::now();
    while now.elapsed() < STALL_DUR {
        std::thread::yield_now();
    }
}

/// Seconds one iteration may take before the watchdog ends the process (exit 3).
static TIMEOUT_S: AtomicUsize = AtomicUsize::new(10);
/// Bumped at every iteration's start and end: the watchdog's sign of progress.
static PROGRESS: AtomicUsize = AtomicUsize::new(0);

fn watchdog() {
    std::thread::spawn(|| {
        let mut last = usize::MAX;
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let p = PROGRESS.load(Relaxed);
            if p != last {
                last = p;
                since = Instant::now();
            } else if p % 2 == 1
                && since.elapsed() > Duration::from_secs(TIMEOUT_S.load(Relaxed) as u64)
            {
                eprintln!("weft-tokio-bench: an iteration timed out (some task never ran?)");
                std::process::exit(3);
            }
        }
    });
}

/// Runs `iter` once untimed and then `reps` times; returns the per-iteration times.
fn measure(reps: usize, mut iter: impl FnMut()) -> Vec<u64> {
    let timed = |i: &mut dyn FnMut()| {
        PROGRESS.fetch_add(1, Relaxed);
        let t0 = Instant::now();
        i();
        let t = t0.elapsed().as_nanos() as u64;
        PROGRESS.fetch_add(1, Relaxed);
        t
    };
    timed(&mut iter);
    (0..reps).map(|_| timed(&mut iter)).collect()
}

fn spawn_many_local(workers: usize, p: &Params, reps: usize) -> (usize, Vec<u64>) {
    let rt = rt(workers);
    let (tx, rx) = mpsc::sync_channel(1000);
    let rem = Arc::new(AtomicUsize::new(0));
    let n = p.num_spawn;
    let t = measure(reps, || {
        rem.store(n, Relaxed);
        rt.block_on(async {
            for _ in 0..n {
                let tx = tx.clone();
                let rem = rem.clone();
                tokio::spawn(async move {
                    if 1 == rem.fetch_sub(1, Relaxed) {
                        tx.send(()).unwrap();
                    }
                });
            }
            rx.recv().unwrap();
        });
    });
    (n, t)
}

fn spawn_many_remote_idle(workers: usize, p: &Params, reps: usize) -> (usize, Vec<u64>) {
    let rt = rt(workers);
    let n = p.num_spawn;
    let mut handles = Vec::with_capacity(n);
    let t = measure(reps, || {
        for _ in 0..n {
            handles.push(rt.spawn(async {}));
        }
        rt.block_on(async {
            for h in handles.drain(..) {
                h.await.unwrap();
            }
        });
    });
    (n, t)
}

// Busy with 2 x workers tasks that yield and stall 10 us in a loop.
fn spawn_many_remote_busy1(workers: usize, p: &Params, reps: usize) -> (usize, Vec<u64>) {
    let rt = rt(workers);
    let handle = rt.handle().clone();
    let n = p.num_spawn;
    let mut handles = Vec::with_capacity(n);
    let flag = Arc::new(AtomicBool::new(true));
    for _ in 0..2 * workers {
        let flag = flag.clone();
        rt.spawn(async move {
            while flag.load(Relaxed) {
                tokio::task::yield_now().await;
                stall();
            }
        });
    }
    let t = measure(reps, || {
        for _ in 0..n {
            handles.push(handle.spawn(async {}));
        }
        rt.block_on(async {
            for h in handles.drain(..) {
                h.await.unwrap();
            }
        });
    });
    flag.store(false, Relaxed);
    (n, t)
}

// Busy with `workers` chains of tasks that stall 10 us and spawn the next.
fn spawn_many_remote_busy2(workers: usize, p: &Params, reps: usize) -> (usize, Vec<u64>) {
    let rt = rt(workers);
    let handle = rt.handle().clone();
    let n = p.num_spawn / 10;
    let mut handles = Vec::with_capacity(n);
    let flag = Arc::new(AtomicBool::new(true));
    fn iter(flag: Arc<AtomicBool>) {
        tokio::spawn(async {
            if flag.load(Relaxed) {
                stall();
                iter(flag);
            }
        });
    }
    for _ in 0..workers {
        let flag = flag.clone();
        rt.spawn(async {
            iter(flag);
        });
    }
    let t = measure(reps, || {
        for _ in 0..n {
            handles.push(handle.spawn(async {}));
        }
        rt.block_on(async {
            for h in handles.drain(..) {
                h.await.unwrap();
            }
        });
    });
    flag.store(false, Relaxed);
    (n, t)
}

fn yield_many(workers: usize, p: &Params, reps: usize) -> (usize, Vec<u64>) {
    let rt = rt(workers);
    let (tx, rx) = mpsc::sync_channel(p.yield_tasks);
    let (tasks, yields) = (p.yield_tasks, p.num_yield);
    let t = measure(reps, || {
        for _ in 0..tasks {
            let tx = tx.clone();
            rt.spawn(async move {
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
                tx.send(()).unwrap();
            });
        }
        for _ in 0..tasks {
            rx.recv().unwrap();
        }
    });
    (tasks * yields, t)
}

fn chained_spawn(workers: usize, p: &Params, reps: usize) -> (usize, Vec<u64>) {
    fn iter(done_tx: mpsc::SyncSender<()>, n: usize) {
        if n == 0 {
            done_tx.send(()).unwrap();
        } else {
            tokio::spawn(async move {
                iter(done_tx, n - 1);
            });
        }
    }
    let rt = rt(workers);
    let (done_tx, done_rx) = mpsc::sync_channel(1000);
    let n = p.chain;
    let t = measure(reps, || {
        let done_tx = done_tx.clone();
        rt.block_on(async {
            tokio::spawn(async move {
                iter(done_tx, n);
            });
            done_rx.recv().unwrap();
        });
    });
    (n, t)
}

fn usage() -> ! {
    eprintln!(
        "usage: weft-tokio-bench --bench NAME --workers W [--reps R] [--tiny] [--timeout S]\n  NAME: \
         spawn_many_local spawn_many_remote_idle spawn_many_remote_busy1 \
         spawn_many_remote_busy2 yield_many chained_spawn"
    );
    std::process::exit(2);
}

fn main() {
    let mut bench = String::new();
    let (mut workers, mut reps, mut tiny) = (0usize, 11usize, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => bench = args.next().unwrap_or_else(|| usage()),
            "--workers" => workers = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            "--tiny" => tiny = true,
            "--timeout" => TIMEOUT_S.store(
                args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
                Relaxed,
            ),
            _ => usage(),
        }
    }
    if workers == 0 || reps == 0 {
        usage();
    }
    watchdog();
    let div = if tiny { 10 } else { 1 };
    let p = Params {
        num_spawn: 10_000 / div,
        num_yield: 1_000 / div,
        yield_tasks: 200 / div,
        chain: 1_000 / div,
    };
    let f = match bench.as_str() {
        "spawn_many_local" => spawn_many_local,
        "spawn_many_remote_idle" => spawn_many_remote_idle,
        "spawn_many_remote_busy1" => spawn_many_remote_busy1,
        "spawn_many_remote_busy2" => spawn_many_remote_busy2,
        "yield_many" => yield_many,
        "chained_spawn" => chained_spawn,
        _ => usage(),
    };
    let (tasks, mut t) = f(workers, &p, reps);
    t.sort_unstable();
    let n = t.len();
    let median = if n % 2 == 1 { t[n / 2] } else { (t[n / 2 - 1] + t[n / 2]) / 2 };
    println!(
        "RESULT tokio impl=tokio bench={} workers={} tasks={} median_ns={} reps={}",
        bench, workers, tasks, median, n
    );
}
