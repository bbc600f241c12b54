//! A YAML tree that remembers where every node came from.
//!
//! Built from yaml-rust2's event stream so that every key and value keeps its line and
//! column; the typed pipeline is read from this tree, never from a span-less value.

use crate::diag::{Diagnostic, Span};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub span: Span,
}

/// The shape of a node. Scalars stay text until the reader knows what it expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A scalar; `plain` is false for quoted and block scalars, whose text is always a string.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; duplicate keys are reported when the tree is built.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The scalar text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for `null`, `~` and an empty plain scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// What the node is, for messages: "a string", "a list", "a mapping".
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "null",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// Parses one YAML document. A syntax error comes back as a diagnostic at its position.
pub fn parse(text: &str) -> Result<Option<Node>, Diagnostic> {
    let mut builder = Builder {
        text,
        cursor: (0, 0),
        documents: 0,
        stack: Vec::new(),
        anchors: Vec::new(),
        root: None,
        errors: Vec::new(),
    };
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        let span = span_at(text, e.marker(), 1);
        return Err(Diagnostic::error(format!("invalid YAML: {}", e.info()))
            .at(span)
            .hint("check the indentation and quoting around this position"));
    }
    if let Some(err) = builder.errors.into_iter().next() {
        return Err(err);
    }
    Ok(builder.root)
}

enum Frame {
    Seq(usize, Span, Vec<Node>),
    Map(usize, Span, Vec<(Node, Node)>, Option<Node>),
}

struct Builder<'a> {
    text: &'a str,
    /// Last (char index, byte offset) converted; events arrive mostly in order, so walking on
    /// from here keeps conversion linear.
    cursor: (usize, usize),
    documents: usize,
    stack: Vec<Frame>,
    anchors: Vec<(usize, Node)>,
    root: Option<Node>,
    errors: Vec<Diagnostic>,
}

impl Builder<'_> {
    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.push((anchor, node.clone()));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, entries, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    let duplicate = key.as_str().is_some()
                        && entries.iter().any(|(k, _)| k.as_str() == key.as_str());
                    if duplicate {
                        self.errors.push(
                            Diagnostic::error(format!(
                                "duplicate key `{}`",
                                key.as_str().unwrap_or_default()
                            ))
                            .at(key.span)
                            .hint("each key may appear once in a mapping; merge the two entries"),
                        );
                    }
                    entries.push((key, node));
                }
            },
        }
    }
}

impl Builder<'_> {
    fn span(&mut self, mark: &Marker, len: usize) -> Span {
        let (mut chars, mut bytes) = self.cursor;
        if mark.index() < chars {
            (chars, bytes) = (0, 0);
        }
        let mut rest = self.text[bytes..].char_indices();
        while chars < mark.index() {
            match rest.next() {
                Some(_) => {
                    chars += 1;
                    bytes = self.text.len() - rest.as_str().len();
                }
                None => break,
            }
        }
        self.cursor = (chars, bytes);
        Span {
            offset: bytes,
            line: mark.line() as u32,
            col: mark.col() as u32 + MARKER_COL_BASE,
            len: len as u32,
        }
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                let len = match style {
                    TScalarStyle::Plain => text.chars().count(),
                    TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => {
                        text.chars().count() + 2
                    }
                    _ => 1,
                };
                let span = self.span(&mark, len.max(1));
                self.push(
                    Node {
                        kind: Kind::Scalar { text, plain },
                        span,
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => {
                let span = self.span(&mark, 1);
                self.stack.push(Frame::Seq(anchor, span, Vec::new()))
            }
            Event::MappingStart(anchor, _) => {
                let span = self.span(&mark, 1);
                self.stack.push(Frame::Map(anchor, span, Vec::new(), None))
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(anchor, span, items)) = self.stack.pop() {
                    self.push(
                        Node {
                            kind: Kind::Seq(items),
                            span,
                        },
                        anchor,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(anchor, span, entries, _)) = self.stack.pop() {
                    // The scanner marks a block mapping where its first value starts; its
                    // first key is where a reader looks.
                    let span = entries.first().map_or(span, |(key, _)| key.span);
                    self.push(
                        Node {
                            kind: Kind::Map(entries),
                            span,
                        },
                        anchor,
                    );
                }
            }
            Event::Alias(id) => {
                let found = self.anchors.iter().rev().find(|(a, _)| *a == id);
                match found {
                    Some((_, node)) => {
                        let mut node = node.clone();
                        node.span = self.span(&mark, 1);
                        self.push(node, 0);
                    }
                    None => {
                        let span = self.span(&mark, 1);
                        self.errors
                            .push(Diagnostic::error("alias to an unknown anchor").at(span));
                    }
                }
            }
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents == 2 {
                    let span = self.span(&mark, 3);
                    self.errors.push(
                        Diagnostic::error(
                            "a pipeline file holds one YAML document; a second one starts here",
                        )
                        .at(span)
                        .hint("remove the `---` line, or put each pipeline in a file of its own"),
                    );
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

/// yaml-rust2 counts columns from 0; ours count from 1 like every editor.
const MARKER_COL_BASE: u32 = 1;

/// A span for a scanner position outside the builder (syntax errors).
fn span_at(text: &str, mark: &Marker, len: usize) -> Span {
    let offset = text
        .char_indices()
        .nth(mark.index())
        .map_or(text.len(), |(i, _)| i);
    Span {
        offset,
        line: mark.line() as u32,
        col: mark.col() as u32 + MARKER_COL_BASE,
        len: len as u32,
    }
}
