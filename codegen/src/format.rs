//! `raindrop fmt`: a manifest rewritten canonically, its comments kept.
//!
//! The parser is hcl-edit's, which keeps every comment and space in the *decor* around each
//! item; formatting rewrites only that decor: two spaces of indentation per block, one space
//! around `=` with the `=` of consecutive attributes aligned, one space between a block's name,
//! labels and `{`, a non-empty block's body on lines of its own, at most one blank line between
//! items, and comments on their own lines re-indented to their item (a comment after an item on
//! its line stays there). Expressions are kept as written. Formatting its own output changes
//! nothing.

use hcl_edit::structure::{Body, Structure};
use hcl_edit::{Decorate, RawString};

/// `source` formatted; an error (the parser's message) when it is not HCL.
pub fn format(source: &str) -> Result<String, String> {
    let mut body = hcl_edit::parser::parse_body(source).map_err(|e| e.to_string())?;
    format_body(&mut body, 0);
    body.set_prefer_omit_trailing_newline(false);
    // What follows the last item (comments at the end of the file) is the body's suffix.
    let trailing = comment_lines(body.decor().suffix());
    body.decor_mut().set_suffix("");
    let mut out = body.to_string();
    if !trailing.lines.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        for line in &trailing.lines {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// The comments of a stretch of decor, and whether a blank line came before them.
struct Comments {
    blank_before: bool,
    lines: Vec<String>,
}

/// The comment lines of `raw` (everything in decor that is not whitespace is a comment), each
/// trimmed, with single blank lines kept between them. Decor before an item starts after the
/// previous item's line break and ends with the item's indentation: each piece before the last
/// line break is a whole line, blank or a comment.
fn comment_lines(raw: Option<&RawString>) -> Comments {
    let text = raw.map_or("", |r| &**r);
    let mut parts: Vec<&str> = text.split('\n').collect();
    // What follows the last line break is the item's own indentation, unless it holds a
    // comment (the end of a file without a final line break).
    if parts.last().is_some_and(|last| last.trim().is_empty()) {
        parts.pop();
    }
    let mut lines: Vec<String> = Vec::new();
    let mut blank_before = false;
    let mut blank = false;
    for line in parts.into_iter().map(str::trim) {
        if line.is_empty() {
            blank = true;
            continue;
        }
        if blank {
            if lines.is_empty() {
                blank_before = true;
            } else {
                lines.push(String::new());
            }
        }
        blank = false;
        lines.push(line.to_owned());
    }
    if blank && lines.is_empty() {
        blank_before = true;
    }
    Comments {
        blank_before,
        lines,
    }
}

/// The decor prefix of an item at `indent` with `comments` before it.
fn prefix(comments: &Comments, indent: &str, first: bool) -> String {
    let mut out = String::new();
    if comments.blank_before && !first {
        out.push('\n');
    }
    for line in &comments.lines {
        if !line.is_empty() {
            out.push_str(indent);
            out.push_str(line);
        }
        out.push('\n');
    }
    out.push_str(indent);
    out
}

/// A comment after an item on its line, as the item's suffix.
fn suffix(raw: Option<&RawString>) -> String {
    let text = raw.map_or("", |r| &**r).trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(" {text}")
    }
}

fn format_body(body: &mut Body, depth: usize) {
    let indent = "  ".repeat(depth);
    // Runs of attributes with no blank line or block between them align their `=`.
    let mut widths = vec![0; body.len()];
    let mut run: Vec<usize> = Vec::new();
    let flush = |run: &mut Vec<usize>, widths: &mut Vec<usize>, body: &Body| {
        let width = run
            .iter()
            .filter_map(|&i| body.get(i).and_then(Structure::as_attribute))
            .map(|a| a.key.as_str().chars().count())
            .max()
            .unwrap_or(0);
        for &i in run.iter() {
            widths[i] = width;
        }
        run.clear();
    };
    for i in 0..body.len() {
        let Some(structure) = body.get(i) else {
            continue;
        };
        let blank = comment_lines(structure.decor().prefix()).blank_before;
        if blank || structure.is_block() {
            flush(&mut run, &mut widths, body);
        }
        if structure.is_attribute() {
            run.push(i);
        }
    }
    flush(&mut run, &mut widths, body);

    for (i, width) in widths.into_iter().enumerate() {
        let Some(structure) = body.get_mut(i) else {
            continue;
        };
        let comments = comment_lines(structure.decor().prefix());
        let after = suffix(structure.decor().suffix());
        structure
            .decor_mut()
            .set_prefix(prefix(&comments, &indent, i == 0));
        structure.decor_mut().set_suffix(after);
        match structure {
            Structure::Attribute(attribute) => {
                let pad = width.saturating_sub(attribute.key.as_str().chars().count());
                attribute.key.decor_mut().set_prefix("");
                attribute.key.decor_mut().set_suffix(" ".repeat(pad + 1));
                attribute.value.decor_mut().set_prefix(" ");
                attribute.value.decor_mut().set_suffix("");
            }
            Structure::Block(block) => {
                block.ident.decor_mut().set_prefix("");
                block.ident.decor_mut().set_suffix(" ");
                for label in &mut block.labels {
                    label.decor_mut().set_prefix("");
                    label.decor_mut().set_suffix(" ");
                }
                // Comments before the closing brace are the body's suffix.
                let closing = comment_lines(block.body.decor().suffix());
                // A comment after the opening brace, on its line, is the body's prefix.
                let opening = suffix(block.body.decor().prefix());
                let inner = "  ".repeat(depth + 1);
                format_body(&mut block.body, depth + 1);
                let empty = block.body.is_empty() && closing.lines.is_empty() && opening.is_empty();
                block.body.set_prefer_oneline(empty);
                block.body.decor_mut().set_prefix(opening);
                let mut end = String::new();
                if !closing.lines.is_empty() {
                    if closing.blank_before && !block.body.is_empty() {
                        end.push('\n');
                    }
                    for line in &closing.lines {
                        if !line.is_empty() {
                            end.push_str(&inner);
                            end.push_str(line);
                        }
                        end.push('\n');
                    }
                }
                if !empty {
                    end.push_str(&indent);
                }
                block.body.decor_mut().set_suffix(end);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::format;

    #[test]
    fn a_messy_manifest_comes_out_canonical_with_its_comments() {
        let messy = "# the app\napplication   \"demo\"{\n      queue \"jobs\" {   }\n\n\n\n   # workers\n  task \"worker\" {\nconcurrency=4\n max_attempts = 2 # enough\n }\n  kv_cache \"status\" {\n  # nothing yet\n  }\n}\n# end\n";
        let want = "# the app\napplication \"demo\" {\n  queue \"jobs\" {}\n\n  # workers\n  task \"worker\" {\n    concurrency  = 4\n    max_attempts = 2 # enough\n  }\n  kv_cache \"status\" {\n    # nothing yet\n  }\n}\n\n# end\n";
        let formatted = format(messy).unwrap();
        assert_eq!(formatted, want, "\n{formatted}");
        assert_eq!(format(&formatted).unwrap(), formatted, "idempotent");
    }

    #[test]
    fn what_is_not_hcl_is_an_error() {
        assert!(format("application \"x\" {").is_err());
    }
}
