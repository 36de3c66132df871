//! The dashboard in a real browser (chromium over WebDriver).
