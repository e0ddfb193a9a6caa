//! Errors that name where a problem is: file, line, column and YAML path.

use std::fmt;

/// A position in a source text (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// One problem, with as much location as is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: Option<String>,
    pub pos: Option<Pos>,
    /// YAML path such as `machine.network.interfaces[0].dhcp`.
    pub path: Option<String>,
    pub message: String,
}

impl Problem {
    pub fn new(message: impl Into<String>) -> Self {
        Problem {
            file: None,
            pos: None,
            path: None,
            message: message.into(),
        }
    }

    pub fn at(mut self, pos: Option<Pos>) -> Self {
        self.pos = pos;
        self
    }

    pub fn path(mut self, path: impl Into<String>) -> Self {
        let p = path.into();
        self.path = (!p.is_empty()).then_some(p);
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, &self.pos) {
            (Some(file), Some(p)) => write!(f, "{file}:{}:{}: ", p.line, p.column)?,
            (Some(file), None) => write!(f, "{file}: ")?,
            (None, Some(p)) => write!(f, "{}:{}: ", p.line, p.column)?,
            (None, None) => {}
        }
        if let Some(path) = &self.path {
            write!(f, "{path}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// One or more problems; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    pub problems: Vec<Problem>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Error {
    pub fn msg(message: impl Into<String>) -> Self {
        Problem::new(message).into()
    }

    /// Name the file on every problem that has no file yet.
    pub fn in_file(mut self, file: &str) -> Self {
        for p in &mut self.problems {
            p.file.get_or_insert_with(|| file.to_string());
        }
        self
    }
}

impl From<Problem> for Error {
    fn from(p: Problem) -> Self {
        Error { problems: vec![p] }
    }
}

impl From<Vec<Problem>> for Error {
    fn from(problems: Vec<Problem>) -> Self {
        Error { problems }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
