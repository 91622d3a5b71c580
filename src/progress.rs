//! Progress bars on standard error for long work (training, ILWD probes, probe training):
//! one constructor, hidden when the caller says not to show progress.

/// A bar of `len` steps in the indicatif `template` (e.g.
/// `"{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]"`), or a hidden bar when
/// `show` is false. A template that does not parse falls back to the default bar.
pub fn bar(show: bool, len: u64, template: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b
}
