//! `env "NAME" { secret, default }`, at the top of the application or inside a service.

use hcl_edit::structure::Block;

use super::convert::{boolean, string};
use super::reader::Reader;
use crate::ast;
use crate::diagnostic::Diagnostics;

pub(super) fn read_env(
    diags: &mut Diagnostics,
    block: &Block,
    header: ast::Header,
    service: Option<String>,
) -> ast::Env {
    let mut r = Reader::new(&block.body, &header);
    let env = ast::Env {
        secret: r.value(diags, "secret", boolean),
        default: r.value(diags, "default", string),
        service,
        header: header.clone(),
    };
    r.finish(diags);
    env
}
