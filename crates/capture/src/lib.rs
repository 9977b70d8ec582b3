//! Screenshots through WebDriver (fantoccini). Being built.
