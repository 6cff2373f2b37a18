// SPDX-License-Identifier: MIT
//! The Tokio peer of benchmarks/pingpong/pingpong.c: the same four workloads on
//! multi-threaded runtimes of 1 and 2 workers, the same RESULT lines.
//!
//! ping_pong is Tokio's own benches/rt_multi_threaded.rs ping_pong: a spawned task
//! spawns `pings` tasks; each spawns a pong, sends it a oneshot and awaits the
//! oneshot answer; the last one signals the caller (a std sync_channel). The chan
//! variant uses two mpsc channels of capacity 1 instead of the oneshots. round_trip
//! bounces a token `trips` times between two tasks through a pair of Notify (the
//! event pair) and through two mpsc channels of capacity 1.
//!
//! Usage: weft-pingpong-tokio REPS PINGS TRIPS
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Instant;
use tokio::runtime::{self, Runtime};
use tokio::sync::{mpsc, oneshot, Notify};

fn rt(workers: usize) -> Runtime {
    runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .build()
        .unwrap()
}

fn ping_pong(rt: &Runtime, pings: usize, chan: bool) {
    let (done_tx, done_rx) = std_mpsc::sync_channel(1);
    let rem = Arc::new(AtomicUsize::new(pings));
    rt.block_on(async move {
        tokio::spawn(async move {
            for _ in 0..pings {
                let rem = rem.clone();
                let done_tx = done_tx.clone();
                tokio::spawn(async move {
                    if chan {
                        let (tx1, mut rx1) = mpsc::channel::<u8>(1);
                        let (tx2, mut rx2) = mpsc::channel::<u8>(1);
                        tokio::spawn(async move {
                            let v = rx1.recv().await.unwrap();
                            tx2.send(v).await.unwrap();
                        });
                        tx1.send(1).await.unwrap();
                        rx2.recv().await.unwrap();
                    } else {
                        let (tx1, rx1) = oneshot::channel::<()>();
                        let (tx2, rx2) = oneshot::channel::<()>();
                        tokio::spawn(async move {
                            rx1.await.unwrap();
                            tx2.send(()).unwrap();
                        });
                        tx1.send(()).unwrap();
                        rx2.await.unwrap();
                    }
                    if rem.fetch_sub(1, Relaxed) == 1 {
                        done_tx.send(()).unwrap();
                    }
                });
            }
        });
    });
    done_rx.recv().unwrap();
}

fn round_trip(rt: &Runtime, trips: usize, chan: bool) {
    rt.block_on(async move {
        // The ping side is a task too, as in pingpong.c.
        tokio::spawn(async move {
            if chan {
                let (tx1, mut rx1) = mpsc::channel::<usize>(1);
                let (tx2, mut rx2) = mpsc::channel::<usize>(1);
                let pong = tokio::spawn(async move {
                    for _ in 0..trips {
                        let v = rx1.recv().await.unwrap();
                        tx2.send(v).await.unwrap();
                    }
                });
                for i in 0..trips {
                    tx1.send(i).await.unwrap();
                    rx2.recv().await.unwrap();
                }
                pong.await.unwrap();
            } else {
                let ping = Arc::new(Notify::new());
                let pong = Arc::new(Notify::new());
                let (pi, po) = (ping.clone(), pong.clone());
                let other = tokio::spawn(async move {
                    for _ in 0..trips {
                        pi.notified().await;
                        po.notify_one();
                    }
                });
                for _ in 0..trips {
                    ping.notify_one();
                    pong.notified().await;
                }
                other.await.unwrap();
            }
        })
        .await
        .unwrap();
    });
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (reps, pings, trips) = match args[..] {
        [r, p, t] if r > 0 && p > 0 && t > 0 => (r, p, t),
        _ => {
            eprintln!("usage: weft-pingpong-tokio REPS PINGS TRIPS");
            std::process::exit(2);
        }
    };
    let names = ["ping_pong_event", "ping_pong_chan", "round_trip_event", "round_trip_chan"];
    let rts = [rt(1), rt(2)];
    let mut t = vec![vec![Vec::new(); 2]; 4];
    for r in 0..=reps {
        for i in 0..4 {
            for w in 0..2 {
                let t0 = Instant::now();
                match i {
                    0 => ping_pong(&rts[w], pings, false),
                    1 => ping_pong(&rts[w], pings, true),
                    2 => round_trip(&rts[w], trips, false),
                    _ => round_trip(&rts[w], trips, true),
                }
                if r > 0 {
                    t[i][w].push(t0.elapsed().as_nanos() as f64); // round 0: warm-up
                }
            }
        }
    }
    for i in 0..4 {
        let n = if i < 2 { pings } else { trips };
        for w in 0..2 {
            let m = median(&mut t[i][w]);
            println!(
                "RESULT pingpong impl=tokio_{} workers={} n={} median_ns={:.0} ns_per_op={:.1} reps={}",
                names[i], w + 1, n, m, m / n as f64, reps
            );
        }
    }
}
