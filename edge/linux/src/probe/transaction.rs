//! Client/server transaction over TCP: each step sends its bytes, then reads until the answer
//! starts with the step's expectation (decided as soon as a byte differs). Per-step times
//! (send to expected answer) go to `steps_us`; `first_byte` is the first step's time to its
//! first answer byte; `detail` counts the steps completed.

use std::io::{Read, Write};
use std::time::Instant;

use qos_edge_core::probe::classify::Transport;
use qos_edge_core::probe::transaction::{ExpectPrefix, StepProgress};
use qos_wire::codec::List;
use qos_wire::phase::Phase;
use qos_wire::probe::Step;

use super::{tcp, us, Ctx, Fail};

/// Run the script `steps` against `target` (`host:port`).
pub fn run(ctx: &mut Ctx, target: &str, steps: List<'_, Step<'_>>) -> Result<(), Fail> {
    let addr = ctx.resolve_target(target)?;
    let mut s = tcp::connect(ctx, addr)?;
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 4096];
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        let left = ctx.remaining(&format!("step {n}"))?;
        s.set_write_timeout(Some(left))
            .map_err(|e| Fail::io("socket", &e))?;
        let t = Instant::now();
        if !step.send.is_empty() {
            s.write_all(step.send)
                .map_err(|e| Fail::io(&format!("step {n}: send"), &e))?;
        }
        let mut m = ExpectPrefix::new(step.expect);
        let mut first = true;
        loop {
            match m.progress() {
                StepProgress::Matched { .. } => break,
                p @ StepProgress::Mismatch { at } => {
                    return Err(Fail::of(
                        &p,
                        format!(
                            "step {n}: answer differs from {:?} at byte {at}",
                            String::from_utf8_lossy(step.expect)
                        ),
                    ))
                }
                StepProgress::NeedMore => {}
            }
            s.set_read_timeout(Some(ctx.remaining(&format!("step {n}: answer"))?))
                .map_err(|e| Fail::io("socket", &e))?;
            let got = s
                .read(&mut buf)
                .map_err(|e| Fail::io(&format!("step {n}: answer"), &e))?;
            if got == 0 {
                return Err(Fail::of(
                    &Transport::Closed,
                    format!(
                        "step {n}: connection closed after {} of {} expected bytes",
                        m.matched(),
                        step.expect.len()
                    ),
                ));
            }
            if first && i == 0 {
                ctx.add(Phase::FirstByte, us(t, Instant::now()));
            }
            first = false;
            m.feed(&buf[..got]);
        }
        ctx.steps_us.push(us(t, Instant::now()));
        ctx.detail = n as u32;
    }
    Ok(())
}
