//! One small document tree for both answer formats, so the AEMP reading
//! code ([`super::parse`]) is written once. Vendors disagree on spelling
//! (`Links` or `links`), on attributes vs child elements (`datetime`), and
//! on wrapping a JSON body in an array; the tree flattens all of that:
//!
//! - XML: an element is a node; its attributes and child elements are its
//!   children; its text is its text.
//! - JSON: an object's members are children named by their key; an array
//!   member gives one child per item, each named by the key; a scalar is
//!   text. A body that is an array of one object is that object.
//!
//! Names compare without regard to ASCII case.
//!
//! XML goes through `quick-xml`: a maintained pull parser in pure Rust that
//! rejects malformed documents and builds no tree of its own, so this one
//! can be bounded (depth and node count) against hostile answers.

use quick_xml::events::Event;
use thiserror::Error;

/// Deepest nesting taken; AEMP documents are four levels deep.
const MAX_DEPTH: usize = 32;
/// Most nodes in one document.
const MAX_NODES: usize = 2_000_000;

/// One node of an answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    /// Element, attribute or member name.
    pub name: String,
    /// Text content (XML text, JSON scalar).
    pub text: String,
    /// Attributes, child elements, members, array items.
    pub children: Vec<Node>,
}

/// An answer that is not a well-formed document.
#[derive(Debug, Error)]
#[error("malformed {format}: {message}")]
pub struct Malformed {
    /// `XML` or `JSON`.
    pub format: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Node {
    /// The first child called `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Every child called `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children
            .iter()
            .filter(move |c| c.name.eq_ignore_ascii_case(name))
    }

    /// The trimmed text of the child `name`, when present and not empty.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name)
            .map(|c| c.text.trim())
            .filter(|t| !t.is_empty())
    }
}

/// Parses an answer body: JSON when it starts with `{` or `[`, XML
/// otherwise (the `Content-Type` of vendors is not reliable).
pub fn parse(body: &[u8]) -> Result<Node, Malformed> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    match start.map(|i| body[i]) {
        Some(b'{') | Some(b'[') => from_json(body),
        Some(_) => from_xml(body),
        None => Err(Malformed {
            format: "body",
            message: "empty".into(),
        }),
    }
}

/// Parses JSON into a tree.
pub fn from_json(body: &[u8]) -> Result<Node, Malformed> {
    let malformed = |message: String| Malformed {
        format: "JSON",
        message,
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    let value = match value {
        // A body wrapped in an array (seen with some vendors).
        serde_json::Value::Array(mut items) if items.len() == 1 => items.remove(0),
        serde_json::Value::Array(items) => {
            return Err(malformed(format!(
                "a top-level array of {} items, expected one object",
                items.len()
            )));
        }
        other => other,
    };
    if !value.is_object() {
        return Err(malformed("the body is not an object".into()));
    }
    let mut nodes = 0;
    json_node(String::new(), value, 0, &mut nodes).map_err(malformed)
}

fn json_node(
    name: String,
    value: serde_json::Value,
    depth: usize,
    nodes: &mut usize,
) -> Result<Node, String> {
    *nodes += 1;
    if depth > MAX_DEPTH || *nodes > MAX_NODES {
        return Err("nested too deep or too many nodes".into());
    }
    let mut node = Node {
        name,
        ..Node::default()
    };
    match value {
        serde_json::Value::Object(members) => {
            for (key, value) in members {
                match value {
                    serde_json::Value::Array(items) => {
                        for item in items {
                            node.children
                                .push(json_node(key.clone(), item, depth + 1, nodes)?);
                        }
                    }
                    value => node.children.push(json_node(key, value, depth + 1, nodes)?),
                }
            }
        }
        serde_json::Value::Array(items) => {
            // An array in an array: items keep the outer name.
            for item in items {
                node.children
                    .push(json_node(node.name.clone(), item, depth + 1, nodes)?);
            }
        }
        serde_json::Value::String(s) => node.text = s,
        serde_json::Value::Null => {}
        other => node.text = other.to_string(),
    }
    Ok(node)
}

/// Parses XML into a tree: the root element is the returned node.
pub fn from_xml(body: &[u8]) -> Result<Node, Malformed> {
    let malformed = |message: String| Malformed {
        format: "XML",
        message,
    };
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut nodes = 0usize;
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| malformed(format!("at byte {}: {e}", reader.error_position())))?;
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let _ = start;
                return Err(malformed("content after the root element".into()));
            }
            Event::Start(start) => {
                let node = element(&start, &mut nodes).map_err(malformed)?;
                stack.push(node);
                if stack.len() > MAX_DEPTH {
                    return Err(malformed("nested too deep".into()));
                }
            }
            Event::Empty(start) => {
                let node = element(&start, &mut nodes).map_err(malformed)?;
                place(node, &mut stack, &mut root);
            }
            Event::End(_) => {
                let node = stack
                    .pop()
                    .ok_or_else(|| malformed("end tag without a start".into()))?;
                place(node, &mut stack, &mut root);
            }
            Event::Text(text) => {
                let text = text
                    .unescape()
                    .map_err(|e| malformed(format!("text: {e}")))?;
                match stack.last_mut() {
                    Some(node) => node.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(malformed("text outside the root element".into())),
                }
            }
            Event::CData(data) => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(malformed(format!(
            "document ends inside <{}>",
            stack.last().map_or("", |n| n.name.as_str())
        )));
    }
    root.ok_or_else(|| malformed("no root element".into()))
}

/// Places a complete element: a child of the open one, or the root.
fn place(node: Node, open: &mut [Node], root: &mut Option<Node>) {
    match open.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

/// A node for an XML element, its attributes as children.
fn element(start: &quick_xml::events::BytesStart<'_>, nodes: &mut usize) -> Result<Node, String> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err("too many nodes".into());
    }
    let mut node = Node {
        name: local_name(start.name().as_ref()),
        ..Node::default()
    };
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| format!("attribute: {e}"))?;
        let key = local_name(attribute.key.as_ref());
        if key == "xmlns" || attribute.key.as_ref().starts_with(b"xmlns:") {
            continue;
        }
        let value = attribute
            .unescape_value()
            .map_err(|e| format!("attribute `{key}`: {e}"))?;
        *nodes += 1;
        node.children.push(Node {
            name: key,
            text: value.into_owned(),
            children: Vec::new(),
        });
    }
    Ok(node)
}

/// A name without its namespace prefix.
fn local_name(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match name.rsplit_once(':') {
        Some((_, local)) => local.to_owned(),
        None => name.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_attributes_and_elements_are_children_alike() {
        let xml = br#"<?xml version="1.0"?>
<Fleet xmlns="http://standards.iso.org/iso/15143/-3" version="2" snapshotTime="2026-01-05T10:00:00Z">
  <Links><rel>self</rel><href>http://x/Fleet/1</href></Links>
  <Equipment>
    <EquipmentHeader><PIN>P&amp;1</PIN></EquipmentHeader>
    <CumulativeOperatingHours datetime="2026-01-05T09:50:00Z"><Hour>12.5</Hour></CumulativeOperatingHours>
  </Equipment>
</Fleet>"#;
        let root = parse(xml).unwrap();
        assert_eq!(root.name, "Fleet");
        assert_eq!(root.text_of("snapshottime"), Some("2026-01-05T10:00:00Z"));
        assert_eq!(root.child("links").unwrap().text_of("rel"), Some("self"));
        let equipment = root.child("Equipment").unwrap();
        assert_eq!(
            equipment.child("EquipmentHeader").unwrap().text_of("PIN"),
            Some("P&1")
        );
        let hours = equipment.child("CumulativeOperatingHours").unwrap();
        assert_eq!(hours.text_of("datetime"), Some("2026-01-05T09:50:00Z"));
        assert_eq!(hours.text_of("Hour"), Some("12.5"));
    }

    #[test]
    fn json_arrays_become_repeated_children_and_a_wrapped_body_is_unwrapped() {
        let json = br#"[{"version":"2","links":[{"rel":"next","href":"h"}],
            "Equipment":[{"EquipmentHeader":{"PIN":"A"}},{"EquipmentHeader":{"PIN":"B"}}],
            "n": 1.5, "none": null}]"#;
        let root = parse(json).unwrap();
        assert_eq!(root.child("Links").unwrap().text_of("rel"), Some("next"));
        let pins: Vec<_> = root
            .children_named("equipment")
            .map(|e| e.child("EquipmentHeader").unwrap().text_of("pin").unwrap())
            .collect();
        assert_eq!(pins, ["A", "B"]);
        assert_eq!(root.text_of("n"), Some("1.5"));
        assert_eq!(root.text_of("none"), None);
    }

    #[test]
    fn malformed_documents_are_refused() {
        for bad in [
            &b"<Fleet><Equipment></Fleet>"[..],
            b"<Fleet>",
            b"<a/><b/>",
            b"{\"Fleet\": ",
            b"[1, 2]",
            b"   ",
            b"\"text\"",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
