//! An error as one line with its sources.

/// An error with its sources: the top-level message of many crates ("Request failed", "error
/// connecting to server") alone does not say what to fix.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
