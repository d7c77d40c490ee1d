//! What kubedrill never shows: variables and Helm values whose names look like they hold a
//! secret. Inventories are written by people who keep passwords and keys in them (Ansible's
//! `ansible_password`, keys in `cilium_extra_values`); every place that prints or serialises
//! input for a person goes through here.

use serde_json::Value;

/// What a redacted value is shown as.
pub const REDACTED: &str = "<redacted>";

/// Ansible's password variables. kubedrill authenticates with keys only and needs passwordless
/// sudo for become, so these are never used; their presence is reported, their values never.
pub const PASSWORD_VARS: &[&str] = &[
    "ansible_password",
    "ansible_ssh_pass",
    "ansible_ssh_password",
    "ansible_become_password",
    "ansible_become_pass",
    "ansible_sudo_pass",
    "ansible_sudo_password",
    "ansible_su_pass",
    "ansible_su_password",
];

/// Does a variable or values key look like it holds a secret? Words: `password`, `passwd`,
/// `pass` (as a whole word), `secret`, `token`, `credential`, `psk`, or a name ending in `key`
/// or `keys`. Names of files and paths (`ansible_ssh_private_key_file`, `tokenFile`) are not
/// secrets themselves and stay visible.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if [
        "file",
        "path",
        "dir",
        "directory",
        "secretname",
        "secretsnamespace",
    ]
    .iter()
    .any(|s| n.ends_with(s))
    {
        return false;
    }
    n.contains("password")
        || n.contains("passwd")
        || n.contains("secret")
        || n.contains("token")
        || n.contains("credential")
        || n.contains("passphrase")
        || n == "psk"
        || n.ends_with("_psk")
        || n.ends_with("key")
        || n.ends_with("keys")
        || n.split(['_', '-', '.']).any(|w| w == "pass")
}

/// Is a dotted Helm values path (`hubble.tls.server.key`) likely to hold a secret?
pub fn is_secret_path(path: &str) -> bool {
    path.split('.').any(is_secret_name)
}

/// A copy of `v` with every value under a secret-shaped key replaced by [`REDACTED`]. Inside
/// a secret, objects are walked so that a variable's `origin` (file:line) stays visible.
pub fn redact_json(v: &Value) -> Value {
    fn walk(v: &Value, secret: bool) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| {
                        let keep_origin = secret && k == "origin";
                        let s = (secret && !keep_origin) || is_secret_name(k);
                        (k.clone(), walk(x, s))
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|x| walk(x, secret)).collect()),
            Value::Null => Value::Null,
            _ if secret => Value::String(REDACTED.to_owned()),
            other => other.clone(),
        }
    }
    walk(v, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_names() {
        for s in [
            "ansible_password",
            "ansible_ssh_pass",
            "ansible_become_pass",
            "kube_encrypt_secret",
            "bootstrap_token",
            "certificate_key",
            "privateKey",
            "key",
            "keys",
            "etcd.password",
            "psk",
            "wireguard_psk",
        ] {
            assert!(is_secret_name(s), "{s} should be secret");
        }
        for s in [
            "ansible_ssh_private_key_file",
            "ansible_host",
            "kube_version",
            "hashSeed",
            "kubeProxyReplacement",
            "passthrough",
            "bypass",
            "tokenFile",
            "existingSecretName",
        ] {
            assert!(!is_secret_name(s), "{s} should be visible");
        }
        assert!(is_secret_path("hubble.tls.server.key"));
        assert!(!is_secret_path("maglev.hashSeed"));
    }

    #[test]
    fn json_is_redacted_below_secret_keys_but_keeps_origins() {
        let v = json!({
            "vars": {
                "ansible_password": {"value": "hunter2", "origin": "hosts.ini:3"},
                "ansible_host": {"value": "10.0.0.1", "origin": "hosts.ini:3"}
            },
            "cilium_extra_values": {"encryption": {"ipsec": {"keys": ["3+ rfc4106 deadbeef 128"]}},
                                    "etcd": {"password": 42, "enabled": true}}
        });
        let r = redact_json(&v);
        let text = r.to_string();
        assert!(!text.contains("hunter2") && !text.contains("deadbeef") && !text.contains("42"));
        assert_eq!(r["vars"]["ansible_password"]["origin"], "hosts.ini:3");
        assert_eq!(r["vars"]["ansible_host"]["value"], "10.0.0.1");
        assert_eq!(r["cilium_extra_values"]["etcd"]["enabled"], true);
    }
}
