//! `kv_cache "name" { ttl }` (also written `kv_store`).

use hcl_edit::structure::Block;

use super::convert::duration;
use super::reader::Reader;
use crate::ast;
use crate::diagnostic::Diagnostics;

pub(super) fn read_kv_cache(
    diags: &mut Diagnostics,
    block: &Block,
    header: ast::Header,
) -> ast::KvCache {
    let mut r = Reader::new(&block.body, &header);
    let ttl = r.value(diags, "ttl", duration);
    r.finish(diags);
    ast::KvCache { header, ttl }
}
