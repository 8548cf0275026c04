//! Finding the manifest: one rule for the macros, the application binary and the CLI.
//!
//! An explicit path wins; else `$RAINDROP_MANIFEST`; else the nearest `raindrop.manifest` in the
//! starting directory or one above it, so a workspace member shares the root's manifest.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::MANIFEST_FILE;

/// The environment variable that names the manifest (also how trybuild tests point at theirs).
pub const MANIFEST_ENV: &str = "RAINDROP_MANIFEST";

/// The manifest `$RAINDROP_MANIFEST` names, when it is set and not empty.
pub fn overridden() -> Option<PathBuf> {
    std::env::var_os(MANIFEST_ENV)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// The manifest to read from `base` (the crate's directory for the macros, the working
/// directory for the CLI): `explicit` if given, else `$RAINDROP_MANIFEST`, else the nearest
/// `raindrop.manifest` in `base` or above it — or `base/raindrop.manifest` when there is none,
/// so the error names the file that was expected. Relative paths are taken from `base`.
pub fn find(explicit: Option<&Path>, base: &Path) -> PathBuf {
    find_with(explicit, std::env::var_os(MANIFEST_ENV), base)
}

fn find_with(explicit: Option<&Path>, env: Option<OsString>, base: &Path) -> PathBuf {
    let named = explicit
        .map(Path::to_path_buf)
        .or_else(|| env.filter(|p| !p.is_empty()).map(PathBuf::from));
    match named {
        Some(path) => base.join(path),
        None => base
            .ancestors()
            .map(|dir| dir.join(MANIFEST_FILE))
            .find(|candidate| candidate.is_file())
            .unwrap_or_else(|| base.join(MANIFEST_FILE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("raindrop-locate-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("member/src")).unwrap();
        dir
    }

    #[test]
    fn an_explicit_path_wins_over_the_environment() {
        let base = Path::new("/app");
        assert_eq!(
            find_with(Some(Path::new("m.manifest")), Some("/etc/x".into()), base),
            Path::new("/app/m.manifest")
        );
        assert_eq!(
            find_with(None, Some("/etc/other.manifest".into()), base),
            Path::new("/etc/other.manifest")
        );
        assert_eq!(
            find_with(None, Some("relative.manifest".into()), base),
            Path::new("/app/relative.manifest"),
            "a relative override is taken from the base"
        );
    }

    #[test]
    fn without_a_name_the_nearest_manifest_up_from_the_base_is_found() {
        let root = scratch("nearest");
        std::fs::write(root.join(MANIFEST_FILE), "application \"a\" {}\n").unwrap();
        let member = root.join("member");
        assert_eq!(find_with(None, None, &member), root.join(MANIFEST_FILE));
        assert_eq!(
            find_with(None, Some("".into()), &member),
            root.join(MANIFEST_FILE),
            "an empty override is no override"
        );
        std::fs::write(member.join(MANIFEST_FILE), "application \"b\" {}\n").unwrap();
        assert_eq!(find_with(None, None, &member), member.join(MANIFEST_FILE));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn with_no_manifest_anywhere_the_expected_file_is_named() {
        let base = Path::new("/nonexistent-raindrop-dir/app");
        assert_eq!(find_with(None, None, base), base.join(MANIFEST_FILE));
    }
}
