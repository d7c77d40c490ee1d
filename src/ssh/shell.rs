//! POSIX shell quoting and privilege wrapping for remote commands.

/// Quote `s` as one POSIX shell word (single quotes; `'` becomes `'\''`).
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The command line sent to sshd: `sh -c SCRIPT`, or `sudo -n -u USER -- sh -c SCRIPT` when
/// privileged. `sudo -n` never prompts: a missing rule fails at once with a clear message.
pub fn wrap(script: &str, become_user: Option<&str>) -> String {
    let inner = format!("sh -c {}", quote(script));
    match become_user {
        Some(u) => format!("sudo -n -u {} -- {inner}", quote(u)),
        None => inner,
    }
}

/// Whether `sudo`'s stderr says the user may not run the command without a password or at all.
pub fn is_sudo_denied(stderr: &str) -> bool {
    const MARKERS: [&str; 5] = [
        "a password is required",
        "is not in the sudoers file",
        "may not run sudo",
        "is not allowed to execute",
        "sudo: command not found",
    ];
    let lower = stderr.to_ascii_lowercase();
    MARKERS.iter().any(|m| lower.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("abc"), "abc");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(
            wrap("echo $HOME", Some("root")),
            "sudo -n -u root -- sh -c 'echo $HOME'"
        );
        assert_eq!(wrap("true", None), "sh -c true");
    }

    #[test]
    fn sudo_denial() {
        assert!(is_sudo_denied("sudo: a password is required\n"));
        assert!(is_sudo_denied(
            "kdnosudo is not in the sudoers file.  This incident will be reported."
        ));
        assert!(!is_sudo_denied("ls: cannot access"));
    }
}
