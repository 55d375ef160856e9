// REFERENCE SOLUTION, lab 05 (for instructors and `observatory lab dev-check`; students: try
// first). Compiled into the pipeline from pipeline/src/slots/errors.rs.
//
// Bad input is expected input: return it as a value with a reason (a typed `thiserror` enum)
// instead of panicking. A panic unwinds out of the whole batch, so the stage can only set the
// batch aside: one bad record costs hundreds of good ones.

use super::PrecheckError;

pub fn precheck(rec: &[u8]) -> Result<(), PrecheckError> {
    let text = std::str::from_utf8(rec).map_err(|e| PrecheckError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    if text.is_empty() {
        return Err(PrecheckError::Empty);
    }
    Ok(())
}
