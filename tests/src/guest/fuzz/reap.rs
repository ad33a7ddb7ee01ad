//! Reaping against the model: every completion is one the file is owed,
//! once; poll agrees.

use super::*;

/// Reaps until nothing is in flight; every cookie must be outstanding.
pub(super) fn drain(f: &FileM, m: &mut Model) -> Found {
    let start = Instant::now();
    while !m.outstanding.is_empty() {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "{} accepted requests never completed",
                m.outstanding.len()
            ));
        }
        match f.dev.reap(MAX_BATCH, 1000) {
            Ok(v) => account(m, &v)?,
            Err(libc::ETIMEDOUT) | Err(libc::EINTR) => {}
            Err(libc::ENOENT) => {
                return Err(format!(
                    "REAP says nothing is in flight but {} accepted requests never completed",
                    m.outstanding.len()
                ));
            }
            Err(e) => return Err(format!("final REAP: {}", errname(e))),
        }
    }
    Ok(())
}

pub(super) fn account(m: &mut Model, comps: &[IocCompletion]) -> Found {
    for c in comps {
        if !m.outstanding.remove(&c.cookie) {
            return Err(format!(
                "completion {:#x} (status {}) was not outstanding: completed twice or never submitted",
                c.cookie,
                status_name(c.status)
            ));
        }
        if c.status >= STATUS_COUNT {
            return Err(format!(
                "completion {:#x} with unknown status {}",
                c.cookie, c.status
            ));
        }
        m.copy_bufs.remove(&c.cookie);
        m.completed += 1;
    }
    Ok(())
}

pub(super) fn reap(f: &FileM, rng: &mut Rng) -> Found {
    let mut m = lock(f)?;
    let t = [0, 0, 1, 5][rng.below(4) as usize];
    reap_locked(f, &mut m, t)
}

pub(super) fn reap_locked(f: &FileM, m: &mut Model, timeout: i32) -> Found {
    match f.dev.reap(MAX_BATCH, timeout) {
        Ok(v) => account(m, &v),
        Err(libc::ENOENT) if !m.outstanding.is_empty() => Err(format!(
            "REAP: ENOENT with {} accepted requests not reaped",
            m.outstanding.len()
        )),
        Err(e) => allowed(
            "REAP",
            e,
            &[libc::ENOENT, libc::EAGAIN, libc::ETIMEDOUT, libc::EINTR],
        ),
    }
}

pub(super) fn poll_once(f: &FileM) -> Found {
    let mut pfd = libc::pollfd {
        fd: f.dev.f.as_raw_fd(),
        events: libc::POLLIN | libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    if r < 0 {
        return Err(format!("poll: {}", errname(errno())));
    }
    if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        return Err(format!("poll on a live device: revents {:#x}", pfd.revents));
    }
    Ok(())
}
