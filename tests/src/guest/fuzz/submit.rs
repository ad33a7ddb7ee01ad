//! Random SUBMIT batches and the oracle that says which requests the
//! driver must accept, and why it refuses the rest.

use super::*;

/// One random segment and whether the oracle says it is inside a live
/// slab of the submitting file.
fn segment(ctx: &Ctx, own: &Model, other: &[u64], rng: &mut Rng, dir: u32) -> (IocSegment, bool) {
    let max = if rng.chance(80) { 4096 } else { 70_000 };
    let len = 1 + rng.below(max) as u32;
    let addr = match rng.below(10) {
        0..=5 if !own.slabs.is_empty() => {
            let s = own.slabs[rng.below(own.slabs.len() as u64) as usize];
            s.phys + rng.below(s.size)
        }
        6 if !other.is_empty() => other[rng.below(other.len() as u64) as usize] + rng.below(4096),
        7 => {
            ctx.dead
                .lock()
                .ok()
                .and_then(|d| d.first().copied())
                .unwrap_or(0)
                + rng.below(4096)
        }
        8 => rng.next(),
        _ => rng.below(1 << 30),
    };
    let inside = addr.checked_add(u64::from(len)).is_some()
        && own
            .slabs
            .iter()
            .any(|s| addr >= s.phys && addr + u64::from(len) <= s.phys + s.size);
    (IocSegment { addr, len, dir }, inside)
}

/// One random SUBMIT batch: the requests, their segments, what the oracle
/// expects of each, and the copy-mode buffers behind them.
#[derive(Default)]
struct Batch {
    reqs: Vec<IocRequest>,
    segs: Vec<Vec<IocSegment>>,
    expect: Vec<Result<(), i32>>,
    bufs: Vec<(Vec<u8>, Vec<u8>)>,
}

pub(super) fn submit(ctx: &Ctx, fi: usize, rng: &mut Rng) -> Found {
    let other: Vec<u64> = lock(&ctx.files[1 - fi])?
        .slabs
        .iter()
        .map(|s| s.phys)
        .collect();
    let f = &ctx.files[fi];
    let mut m = lock(f)?;
    if m.outstanding.len() > 200 {
        return reap_locked(f, &mut m, 0);
    }
    let copy = rng.chance(25);
    let n = 1 + rng.below(8) as usize;
    let mut batch = Batch::default();
    for _ in 0..n {
        random_request(ctx, &m, &other, copy, rng, &mut batch);
    }
    for (r, v) in batch.reqs.iter_mut().zip(&batch.segs) {
        r.segs = v.as_ptr() as u64;
    }
    let flags =
        if copy { SUBMIT_COPY } else { 0 } | if rng.chance(70) { SUBMIT_NONBLOCK } else { 0 };
    let (res, done) = f.dev.submit(&batch.reqs, flags);
    check_submitted(ctx, &mut m, batch, copy, res, done as usize)
}

/// Adds one random request to `batch`: any op, good and bad segments (or
/// copy-mode buffers), a key slot, a queue, sometimes a bad flag.
fn random_request(
    ctx: &Ctx,
    m: &Model,
    other: &[u64],
    copy: bool,
    rng: &mut Rng,
    batch: &mut Batch,
) {
    let op = if rng.chance(3) {
        rng.below(20) as u16
    } else {
        rng.below(u64::from(OP_COUNT)) as u16
    };
    let nin = rng.below(3) as usize;
    let nout = rng.below(3) as usize;
    let mut v = Vec::new();
    let mut ok = true;
    let (mut inb, mut outb) = (Vec::new(), Vec::new());
    if copy {
        let (li, lo) = (1 + rng.below(8192) as usize, 1 + rng.below(8192) as usize);
        inb = vec![0x11u8; li];
        outb = vec![0u8; lo];
        if nin > 0 {
            v.push(IocSegment {
                addr: inb.as_ptr() as u64,
                len: li as u32,
                dir: SEG_IN,
            });
        }
        if nout > 0 {
            v.push(IocSegment {
                addr: outb.as_mut_ptr() as u64,
                len: lo as u32,
                dir: SEG_OUT,
            });
        }
    } else {
        for k in 0..nin + nout {
            let (s, inside) = segment(ctx, m, other, rng, if k < nin { SEG_IN } else { SEG_OUT });
            ok &= inside;
            v.push(s);
        }
    }
    let slot = if rng.chance(80) {
        rng.below(u64::from(ctx.key_slots) + 1) as u32
    } else {
        rng.next() as u32
    };
    let cookie = ctx.cookie.fetch_add(1, Ordering::Relaxed);
    let mut r = IocRequest {
        header: RequestHeader {
            op,
            key_slot: slot,
            cookie,
            ..Default::default()
        },
        segs: 0,
        nsegs: v.len() as u32,
        queue: if rng.chance(10) {
            rng.below(4) as u32
        } else {
            u32::MAX
        },
    };
    if rng.chance(2) {
        r.header.flags = 1;
    }
    let bad_queue = r.queue != u32::MAX && r.queue >= ctx.queues;
    let e = if op >= 16 || r.header.flags != 0 || bad_queue {
        Err(libc::EINVAL)
    } else if !copy && !v.is_empty() && !ok {
        Err(libc::EFAULT)
    } else {
        Ok(())
    };
    batch.expect.push(e);
    batch.segs.push(v);
    batch.reqs.push(r);
    batch.bufs.push((inb, outb));
}

/// Holds SUBMIT's answer (`res`, `done` accepted) against the oracle and
/// records the accepted requests in the model.
fn check_submitted(
    ctx: &Ctx,
    m: &mut Model,
    mut batch: Batch,
    copy: bool,
    res: Result<(), i32>,
    done: usize,
) -> Found {
    let reqs = &batch.reqs;
    if done > reqs.len() || (res.is_ok() && done != reqs.len()) {
        return Err(format!(
            "SUBMIT of {} said {done} submitted ({res:?})",
            reqs.len()
        ));
    }
    for (i, r) in reqs.iter().take(done).enumerate() {
        if let Err(e) = batch.expect[i] {
            return Err(format!(
                "SUBMIT accepted request {i} (op {}, segs {:x?}) that must fail with {}",
                r.header.op,
                batch.segs[i]
                    .iter()
                    .map(|s| (s.addr, s.len))
                    .collect::<Vec<_>>(),
                errname(e)
            ));
        }
        let h = &r.header;
        key_oracle(m, h.op, h.key_slot, true, ctx.key_slots)?;
        m.outstanding.insert(h.cookie);
        if copy {
            m.copy_bufs
                .insert(h.cookie, std::mem::take(&mut batch.bufs[i]));
        }
    }
    let Err(e) = res else {
        return Ok(());
    };
    allowed(
        "SUBMIT",
        e,
        &[
            libc::EINVAL,
            libc::E2BIG,
            libc::EFAULT,
            libc::EAGAIN,
            libc::EBUSY,
            libc::ENOKEY,
            libc::ENOSPC,
            libc::ENOMEM,
            libc::EINTR,
        ],
    )?;
    let r = &reqs[done];
    if e == libc::EFAULT && batch.expect[done].is_ok() && !copy {
        return Err(format!(
            "SUBMIT refused request {done} with EFAULT though its segments are in live slabs"
        ));
    }
    if e == libc::ENOKEY || (e == libc::EINVAL && batch.expect[done].is_ok()) {
        key_oracle(m, r.header.op, r.header.key_slot, false, ctx.key_slots)
            .map_err(|x| format!("{x} ({})", errname(e)))?;
    }
    Ok(())
}

/// Checks a key op's acceptance against the model and updates it.
fn key_oracle(m: &mut Model, op: u16, slot: u32, accepted: bool, nslots: u32) -> Found {
    let held = m.keys.contains(&slot);
    match op {
        OP_KEY_SET => {
            if accepted {
                m.keys.insert(slot);
            } else if slot < nslots && held {
                return Err(format!("KEY_SET of held slot {slot} refused"));
            }
        }
        OP_AES_GCM_SEAL | OP_AES_GCM_OPEN | OP_KEY_CLEAR => {
            if accepted != held {
                return Err(format!(
                    "op {} on slot {slot}: accepted={accepted} but the file {} that slot",
                    op_name(op),
                    if held { "holds" } else { "does not hold" }
                ));
            }
            if accepted && op == OP_KEY_CLEAR {
                m.keys.remove(&slot);
            }
        }
        _ => {}
    }
    Ok(())
}
