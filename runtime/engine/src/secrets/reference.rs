//! Secret references: a secret kept outside Sluice, named in place of its value as an
//! object of one key — `{"$env": "NAME"}` (an environment variable of the node) or
//! `{"$file": "/abs/path"}` (a file on the node, its trailing newline dropped) — and
//! resolved on the node at the start of each attempt, never stored resolved.
//! `{"$literal": VALUE}` stands for VALUE as written, for the rare literal that looks
//! like a reference. Any string is a literal: a value is never reinterpreted by its
//! text.

use std::io::Read;

use serde_json::Value;

use super::SecretsError;

/// The largest file a `$file` reference reads.
pub(crate) const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

const ENV: &str = "$env";
const FILE: &str = "$file";
const LITERAL: &str = "$literal";

enum Reference<'a> {
    Env(&'a str),
    File(&'a str),
    Literal(&'a Value),
}

fn error(at: &str, message: String) -> SecretsError {
    SecretsError::Reference {
        at: at.to_owned(),
        message,
    }
}

/// The reference `value` is, if it is one (an object whose only key is `$env`,
/// `$file` or `$literal`); a malformed reference is an error.
fn reference<'a>(at: &str, value: &'a Value) -> Result<Option<Reference<'a>>, SecretsError> {
    let Value::Object(o) = value else {
        return Ok(None);
    };
    let special = o
        .keys()
        .find(|k| [ENV, FILE, LITERAL].contains(&k.as_str()));
    let Some(kind) = special else {
        return Ok(None);
    };
    if o.len() != 1 {
        return Err(error(
            at,
            format!("a `{kind}` reference is an object of that one key"),
        ));
    }
    let target = &o[kind.as_str()];
    if kind == LITERAL {
        return Ok(Some(Reference::Literal(target)));
    }
    let Some(target) = target.as_str() else {
        return Err(error(at, format!("`{kind}` names a string")));
    };
    if kind == ENV {
        let ok = !target.is_empty() && !target.contains(['=', '\0']);
        if !ok {
            return Err(error(
                at,
                format!("`{ENV}: {target:?}` is not an environment variable's name"),
            ));
        }
        return Ok(Some(Reference::Env(target)));
    }
    if !target.starts_with('/') || target.contains('\0') {
        return Err(error(
            at,
            format!("`{FILE}: {target:?}` must be an absolute path"),
        ));
    }
    Ok(Some(Reference::File(target)))
}

fn child(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

/// Checks every reference in `secrets` is well formed (not that it resolves: the
/// variable or file need exist only on the node running the connection).
pub(crate) fn validate_references(secrets: &Value) -> Result<(), SecretsError> {
    fn walk(at: &str, v: &Value) -> Result<(), SecretsError> {
        if reference(at, v)?.is_some() {
            return Ok(());
        }
        match v {
            Value::Object(o) => o.iter().try_for_each(|(k, v)| walk(&child(at, k), v)),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| walk(&format!("{at}[{i}]"), v)),
            _ => Ok(()),
        }
    }
    walk("", secrets)
}

fn read_file(at: &str, path: &str) -> Result<String, SecretsError> {
    let failed = |message: String| error(at, format!("`{FILE}: {path}`: {message}"));
    let file = std::fs::File::open(path).map_err(|e| failed(format!("cannot open: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| failed(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(failed(format!(
            "longer than {MAX_SECRET_FILE_BYTES} bytes, the most a secret file may hold"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| failed("is not UTF-8 text".into()))?;
    let value = text.strip_suffix('\n').unwrap_or(&text);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        return Err(failed("is empty".into()));
    }
    Ok(value.to_owned())
}

fn read_env(at: &str, name: &str) -> Result<String, SecretsError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        Ok(_) => Err(error(at, format!("`{ENV}: {name}`: the variable is empty"))),
        Err(std::env::VarError::NotPresent) => Err(error(
            at,
            format!("`{ENV}: {name}`: the variable is not set on this node"),
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(error(
            at,
            format!("`{ENV}: {name}`: the variable is not UTF-8 text"),
        )),
    }
}

/// `secrets` with every reference replaced by what it names, read now.
pub(crate) fn resolve(secrets: &Value) -> Result<Value, SecretsError> {
    fn walk(at: &str, v: &Value) -> Result<Value, SecretsError> {
        match reference(at, v)? {
            Some(Reference::Env(name)) => return read_env(at, name).map(Value::String),
            Some(Reference::File(path)) => return read_file(at, path).map(Value::String),
            Some(Reference::Literal(v)) => return Ok(v.clone()),
            None => {}
        }
        Ok(match v {
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), walk(&child(at, k), v)?)))
                    .collect::<Result<_, SecretsError>>()?,
            ),
            Value::Array(a) => Value::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, v)| walk(&format!("{at}[{i}]"), v))
                    .collect::<Result<_, _>>()?,
            ),
            other => other.clone(),
        })
    }
    walk("", secrets)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn references_resolve_from_the_environment_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        // The test's own variable: the PATH every process has.
        let path_var = std::env::var("PATH").unwrap();
        let secrets = json!({
            "auth": {"token": {"$file": file.to_str().unwrap()}},
            "list": [{"$env": "PATH"}],
            "plain": "env:PATH",
            "odd": {"$literal": {"$env": "PATH"}}
        });
        validate_references(&secrets).unwrap();
        assert_eq!(
            resolve(&secrets).unwrap(),
            json!({"auth": {"token": "from-file"}, "list": [path_var],
                   "plain": "env:PATH", "odd": {"$env": "PATH"}})
        );
    }

    #[test]
    fn a_missing_or_malformed_reference_is_named() {
        let e =
            resolve(&json!({"a": {"b": {"$env": "SLUICE_TEST_SURELY_UNSET_VAR"}}})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "secrets.a.b: `$env: SLUICE_TEST_SURELY_UNSET_VAR`: the variable is not set on this node"
        );
        let e = resolve(&json!({"t": {"$file": "/nonexistent/sluice/secret"}})).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("secrets.t: `$file: /nonexistent/sluice/secret`: cannot open"),
            "{e}"
        );
        let e = validate_references(&json!({"t": {"$file": "relative"}})).unwrap_err();
        assert!(e.to_string().contains("absolute path"), "{e}");
        let e = validate_references(&json!({"t": {"$env": "A", "x": 1}})).unwrap_err();
        assert!(e.to_string().contains("one key"), "{e}");
        let e = validate_references(&json!({"t": [{"$env": 3}]})).unwrap_err();
        assert_eq!(e.to_string(), "secrets.t[0]: `$env` names a string");
    }
}
