//! What the std binaries (`qos-aggregator`, `qos-edge`) share: shutdown on SIGINT/SIGTERM,
//! logging set-up, and one-line error reports with the path or value at fault.

use std::io::IsTerminal;
use std::process::ExitCode;

pub mod signal;

/// Log to stderr at `level` and above (colours only on a terminal). What crates log through
/// the `log` crate (the no_std edge core, feature `log`) goes there too (`LogBridge`).
pub fn init_logging(level: tracing::Level) {
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if log::set_logger(&LogBridge).is_ok() {
        log::set_max_level(match level {
            tracing::Level::ERROR => log::LevelFilter::Error,
            tracing::Level::WARN => log::LevelFilter::Warn,
            tracing::Level::INFO => log::LevelFilter::Info,
            tracing::Level::DEBUG => log::LevelFilter::Debug,
            tracing::Level::TRACE => log::LevelFilter::Trace,
        });
    }
}

/// Hands `log` records to `tracing` at their level, the record's target (its module) as the
/// `module` field.
struct LogBridge;

impl log::Log for LogBridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, r: &log::Record<'_>) {
        let (module, args) = (r.target(), r.args());
        match r.level() {
            log::Level::Error => tracing::error!(module, "{args}"),
            log::Level::Warn => tracing::warn!(module, "{args}"),
            log::Level::Info => tracing::info!(module, "{args}"),
            log::Level::Debug => tracing::debug!(module, "{args}"),
            log::Level::Trace => tracing::trace!(module, "{args}"),
        }
    }

    fn flush(&self) {}
}

/// The error and its causes on one line, each cause once.
pub fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace('\n', " ")
}

/// Print `program: error: ...` on one line to stderr and return exit code `code`.
pub fn fail(program: &str, error: &dyn std::error::Error, code: u8) -> ExitCode {
    eprintln!("{program}: error: {}", one_line(error));
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn causes_join_on_one_line_once() {
        let e = E(
            "cannot open a.toml",
            Some(Box::new(E("no such file\nreally", None))),
        );
        assert_eq!(
            super::one_line(&e),
            "cannot open a.toml: no such file really"
        );
        let dup = E("read a.toml: denied", Some(Box::new(E("denied", None))));
        assert_eq!(super::one_line(&dup), "read a.toml: denied");
    }
}
