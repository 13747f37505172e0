//! A cookie name compiled for the request path.

/// A cookie name with its substring searcher built once, at config compile time:
/// building a searcher costs more than one search in a realistic Cookie header.
#[derive(Clone)]
pub struct CookieName {
    finder: memchr::memmem::Finder<'static>,
}

impl CookieName {
    /// Compile `name` (validated by the config compiler).
    pub fn new(name: &str) -> Self {
        Self {
            finder: memchr::memmem::Finder::new(name.as_bytes()).into_owned(),
        }
    }

    /// The searcher for `name` (the identity lookup uses it).
    pub fn finder(&self) -> &memchr::memmem::Finder<'static> {
        &self.finder
    }

    /// The name as written in the config.
    pub fn as_str(&self) -> &str {
        // Built from a `&str` in `new`.
        std::str::from_utf8(self.finder.needle()).unwrap_or_default()
    }
}

impl std::fmt::Debug for CookieName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CookieName").field(&self.as_str()).finish()
    }
}
