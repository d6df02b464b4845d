//! Every example configuration shipped in deploy/ parses and validates, so
//! the docs never show a config the service would refuse.

use std::path::Path;

use fleetpulse::config::ServiceConfig;
use fleetpulse::customers::CustomersFile;

#[test]
fn every_shipped_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("[[customer]]") {
            let customers = CustomersFile::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            assert!(!customers.customers.is_empty());
        } else {
            let config = ServiceConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            if let Some(customers) = &config.customers {
                CustomersFile::load(&customers.file).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 3,
        "only {checked} configs found in {}",
        dir.display()
    );
}

#[test]
fn check_config_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[engine]\nworkers = 2\nwindow = [\"1h\"]\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.toml:3:"), "{stderr}");
    assert!(stderr.contains("window"), "{stderr}");
}

/// `check-config -c FILE`, as every other command names the service's
/// file, checks it too; a customers file that names no customer (an export
/// gone wrong) is said to refuse every message.
#[test]
fn check_config_takes_c_and_warns_of_a_customers_file_with_no_customer() {
    let dir = tempfile::tempdir().unwrap();
    let customers = dir.path().join("customers.toml");
    std::fs::write(&customers, "").unwrap();
    let config = dir.path().join("fleetpulse.toml");
    let text = format!("customers = {{ file = {customers:?} }}\n[mqtt]\nhost = \"127.0.0.1\"\n");
    std::fs::write(&config, text).unwrap();
    for args in [&["check-config", "-c"][..], &["check-config"][..]] {
        let stdout = checks(args, &config);
        assert!(
            stdout.contains("customers file: ok, 0 customers"),
            "{stdout}"
        );
        assert!(
            stdout.contains("warning: the customers file names no customer"),
            "{stdout}"
        );
    }
}

/// `check-config FILE` tells a customers file from a service file by the
/// TOML's top-level keys, not by searching the text for `[[customer]]`:
/// an empty or comment-only file passed as a service file ("ok, 1
/// sinks"), `[[ customer ]]` failed as a service file, and a service file
/// whose comment mentions `[[customer]]` failed as a customers file.
#[test]
fn check_config_tells_the_kind_of_file_by_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        check_config(&[], &path)
    };
    for (name, text) in [("empty.toml", ""), ("comments.toml", "# customers\n\n")] {
        let (ok, said) = run(name, text);
        assert!(!ok, "{said}");
        assert!(
            said.contains(&format!(
                "{name}: neither a customers file nor a service file: it holds no setting"
            )),
            "{said}"
        );
        assert!(said.contains("would name no customer"), "{said}");
        assert!(said.contains("[[customer]]"), "{said}");
    }
    let (ok, said) = run("typo.toml", "# a service\n[mqt]\nhost = \"x\"\n");
    assert!(!ok, "{said}");
    assert!(
        said.contains("typo.toml:2:1: neither a customers file nor a service file: unknown top-level key `mqt`"),
        "{said}"
    );
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/customers.toml"),
    )
    .unwrap();
    let spaced = shipped.replace("[[customer]]", "[[ customer ]]");
    assert_ne!(spaced, shipped);
    let (ok, said) = run("customers.toml", &spaced);
    assert!(ok, "{said}");
    assert!(said.contains("customers.toml: ok, "), "{said}");
    let (ok, said) = run(
        "service.toml",
        "# each [[customer]] is in customers.toml\n[mqtt]\nhost = \"127.0.0.1\"\n",
    );
    assert!(ok, "{said}");
    assert!(said.contains("service.toml: ok, 1 sinks"), "{said}");
}

/// A customers file that is not there: `run` names it with the OS's reason
/// once (each cause of the error chain ended with it again).
#[test]
fn a_missing_customers_file_is_named_with_the_reason_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fleetpulse.toml");
    let missing = dir.path().join("missing-customers.toml");
    let text = format!(
        "customers = {{ file = {missing:?} }}\n[mqtt]\nhost = \"127.0.0.1\"\nport = 1\n\
         [wal]\ndir = {:?}\n",
        dir.path().join("wal")
    );
    std::fs::write(&config, text).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .args(["run", "-c"])
        .arg(&config)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("missing-customers.toml: cannot read"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
}

/// A customers file whose customer is on `EST` (a fixed UTC-05:00 all
/// year, not New York's time) checks, and check-config says why it is
/// likely not what was meant, naming the customer.
#[test]
fn check_config_warns_of_a_legacy_time_zone_name() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/customers.toml"),
    )
    .unwrap();
    let first = shipped.find("\nsegment = ").unwrap();
    let text = format!(
        "{}\ntimezone = \"EST\"{}",
        &shipped[..first],
        &shipped[first..]
    );
    let customers = dir.path().join("customers.toml");
    std::fs::write(&customers, text).unwrap();
    let stdout = checks(&["check-config"], &customers);
    assert!(
        stdout.contains("time zone `EST` is a legacy abbreviation with one offset all year"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("warning:").count(), 1, "{stdout}");
}

/// Runs `fleetpulse ARGS FILE`, which must succeed: its standard output.
fn checks(args: &[&str], file: &Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[path = "support/small_disk.rs"]
#[allow(dead_code)]
mod small_disk;

/// A service file whose WAL, store and dead letters lie on a read-only
/// mount (a volume mounted `ro` by mistake): `check-config` fails naming
/// each field and why, as `run` would fail, where before it said "ok".
/// Writable again, it passes and leaves nothing behind; `--file-only`
/// checks the file alone (one meant for another machine).
#[test]
fn check_config_names_the_places_it_cannot_write() {
    use small_disk::{SmallDisk, rerun_in_namespace};
    let Some(disk) = SmallDisk::mount("1m") else {
        return rerun_in_namespace("check_config_names_the_places_it_cannot_write");
    };
    let config = disk.path().join("fleetpulse.toml");
    std::fs::write(
        &config,
        "[mqtt]\nhost = \"127.0.0.1\"\n\n[wal]\ndir = \"data/wal\"\n\n\
         [limits]\nearliest_event_time = \"2020-01-01T00:00:00Z\"\n\
         dead_letter_file = \"dead-letters.jsonl\"\n\n\
         [[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n",
    )
    .unwrap();
    let check = |extra: &[&str]| check_config(extra, &config);
    let (ok, said) = check(&[]);
    assert!(ok, "{said}");
    let listed = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = (std::fs::read_dir(dir).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        listed(disk.path()),
        ["fleetpulse.toml"],
        "nothing left behind"
    );

    disk.remount(true);
    let (ok, said) = check(&[]);
    assert!(!ok, "{said}");
    for field in ["wal.dir", "sinks[0].path", "limits.dead_letter_file"] {
        assert!(
            said.contains(&format!("field `{field}`")),
            "{field}: {said}"
        );
    }
    assert!(said.contains("Read-only file system"), "{said}");
    let (ok, said) = check(&["--file-only"]);
    assert!(ok, "{said}");
    disk.remount(false);

    // A file where the WAL's directory goes, a directory where the store's
    // file goes: refused as `run` refuses them.
    std::fs::create_dir_all(disk.path().join("data")).unwrap();
    std::fs::write(disk.path().join("data/wal"), "").unwrap();
    std::fs::create_dir(disk.path().join("kpi.sqlite")).unwrap();
    let (ok, said) = check(&[]);
    assert!(!ok, "{said}");
    assert!(said.contains("is not a directory"), "{said}");
    assert!(said.contains("is a directory, where a file goes"), "{said}");
}

/// A store file the service's user may write, in a directory it may not
/// (the file handed over with `chown`, its directory left to root): SQLite
/// cannot make its journal beside it and `run` fails at the first write.
/// And the outbox the service opens by default, `{wal.dir}/alerts-outbox`,
/// left to root. `check-config`, run as that user, names both fields, where
/// before it passed; handed over too, they pass.
#[test]
fn check_config_as_the_service_user_checks_the_directory_of_a_file_and_the_default_outbox() {
    use std::os::unix::fs::{PermissionsExt, chown};
    const NOBODY: u32 = 65534;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("fleetpulse.toml");
    std::fs::write(
        &config,
        "[mqtt]\nhost = \"127.0.0.1\"\n\n[wal]\ndir = \"wal\"\n\n\
         [limits]\nearliest_event_time = \"2020-01-01T00:00:00Z\"\n\n\
         [[sinks]]\ntype = \"sqlite\"\npath = \"kpi.sqlite\"\n",
    )
    .unwrap();
    let (store, wal) = (dir.path().join("kpi.sqlite"), dir.path().join("wal"));
    let outbox = wal.join("alerts-outbox");
    std::fs::write(&store, "").unwrap();
    std::fs::create_dir_all(&outbox).unwrap();
    for place in [&store, &wal] {
        chown(place, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let as_nobody = || {
        let output = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_fleetpulse"))
            .arg("check-config")
            .arg(&config)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), said)
    };
    let (ok, said) = as_nobody();
    assert!(!ok, "{said}");
    for field in ["sinks[0].path", "alerts.outbox_dir"] {
        assert!(
            said.contains(&format!("field `{field}`")),
            "{field}: {said}"
        );
    }
    assert!(said.contains("Permission denied"), "{said}");
    assert!(!said.contains("field `wal.dir`"), "{said}");
    for place in [dir.path(), &outbox] {
        chown(place, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let (ok, said) = as_nobody();
    assert!(ok, "{said}");
}

/// `fleetpulse check-config EXTRA.. FILE`: whether it passed, and what it
/// printed (stdout, then stderr).
fn check_config(extra: &[&str], file: &Path) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .arg("check-config")
        .args(extra)
        .arg(file)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}
