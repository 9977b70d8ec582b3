//! Screenshots through WebDriver (fantoccini). Being built.
pub mod error;
pub mod guard;
pub mod options;
pub use error::{CaptureError, OptionError};
pub use options::{CaptureOptions, Format, RawCaptureOptions, RawValue, Target};
