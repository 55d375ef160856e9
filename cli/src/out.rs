//! Standard output that ends quietly when its reader has gone (`observatory lab list | head`):
//! a closed pipe is not an error, so the process exits 0 without a panic or a message. The
//! crate's `println!` and `print!` (defined in `main.rs`) write through here; the signal is left
//! ignored (Rust's default), so a write to a dead child's pipe or socket stays an error value.

use std::io::Write;

/// Write `args` (and a newline when `newline`) to stdout; exit quietly on a broken pipe.
pub fn write(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    let r = out
        .write_fmt(args)
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        // Anything else (a full disk behind a redirect) is worth a word, once.
        let _ = writeln!(std::io::stderr(), "observatory: writing the output: {e}");
        std::process::exit(1);
    }
}
