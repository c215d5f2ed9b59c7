//! The image store end to end: real images built with umoci, a real
//! registry (Debian's docker-registry) fed by skopeo, umoci as the unpack
//! peer, hostile layers crafted with python3's tarfile, and `exec --image`
//! in the real container. Every pinfold command runs as the test user.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use common::user_dir;

fn out(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `pinfold ARGS` as the test user with its own PINFOLD_HOME.
fn pf(home: &Path, args: &[&str]) -> (i32, String, String) {
    let o = common::pinfold()
        .env("PINFOLD_HOME", home)
        .args(args)
        .output()
        .expect("run pinfold");
    out(&o)
}

/// `image rm IMAGE`, then `image gc`: how many layer files the cache keeps.
fn rm_and_gc(home: &Path, image: &str) -> usize {
    ok(home, &["image", "rm", image]);
    ok(home, &["image", "gc"]);
    std::fs::read_dir(home.join("images/layers"))
        .unwrap()
        .count()
}

fn ok(home: &Path, args: &[&str]) -> String {
    let (c, o, e) = pf(home, args);
    assert_eq!(c, 0, "pinfold {args:?} failed: {e}");
    o
}

fn sh(script: &str) {
    let s = Command::new("sh").arg("-ec").arg(script).status().unwrap();
    assert!(s.success(), "{script}");
}

fn open_up(p: &Path) {
    sh(&format!("chmod -R a+rX '{}'", p.display()));
}

/// A busybox image with two more layers that delete, replace and link,
/// built with umoci: `oci:DIR:img`.
fn umoci_image(dir: &Path) -> String {
    let l = dir.join("layout");
    let b = dir.join("bundle");
    sh(&format!(
        r#"
umoci init --layout {l}
umoci new --image {l}:img
umoci unpack --rootless --image {l}:img {b} >/dev/null
r={b}/rootfs
mkdir -p $r/bin $r/a $r/d/sub $r/e $r/ro
cp "$(command -v busybox)" $r/bin/busybox
for c in sh cat ls echo env pwd test; do ln -s busybox $r/bin/$c; done
echo one > $r/a/f1; echo two > $r/a/f2; echo x > $r/d/sub/x; echo e > $r/e/e
echo h > $r/a/h1; ln $r/a/h1 $r/a/h2; ln -s a/f1 $r/s; ln -s /nowhere $r/dangling
echo ro > $r/ro/f; chmod 0750 $r/ro; chmod 04755 $r/a/f2; chmod 0600 $r/a/h1
umoci repack --refresh-bundle --image {l}:img {b}
rm $r/a/f1; rm -r $r/d; mkdir $r/d; echo new > $r/d/new
rm $r/a/f2; mkdir $r/a/f2; echo in > $r/a/f2/in
rm -r $r/e; ln -s a $r/e
umoci repack --refresh-bundle --image {l}:img {b}
echo top > $r/top; rm $r/dangling
umoci repack --refresh-bundle --image {l}:img {b}
umoci config --image {l}:img --config.env PATH=/bin --config.env FOO=img --config.workingdir /a
"#,
        l = l.display(),
        b = b.display()
    ));
    open_up(dir);
    format!("oci:{}:img", l.display())
}

/// paths → (type, mode, symlink target or content).
fn tree(root: &Path) -> BTreeMap<PathBuf, (char, u32, Vec<u8>)> {
    let mut m = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let (k, v) = if ft.is_symlink() {
                (
                    'l',
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if ft.is_dir() {
                stack.push(p.clone());
                ('d', Vec::new())
            } else if ft.is_file() {
                ('f', std::fs::read(&p).unwrap())
            } else {
                ('o', Vec::new())
            };
            let mode = if ft.is_symlink() {
                0
            } else {
                md.mode() & 0o7777
            };
            m.insert(p.strip_prefix(root).unwrap().to_owned(), (k, mode, v));
        }
    }
    m
}

fn assert_same_tree(a: &Path, b: &Path) {
    let (ta, tb) = (tree(a), tree(b));
    for (p, v) in &ta {
        assert_eq!(
            Some(v),
            tb.get(p),
            "{} differs ({} vs {})",
            p.display(),
            a.display(),
            b.display()
        );
    }
    for p in tb.keys() {
        assert!(
            ta.contains_key(p),
            "{} only in {}",
            p.display(),
            b.display()
        );
    }
}

fn umoci_unpack(layout_ref: &str, dest: &Path) -> PathBuf {
    let image = layout_ref.strip_prefix("oci:").unwrap();
    sh(&format!(
        "umoci unpack --rootless --image '{image}' '{}' >/dev/null",
        dest.display()
    ));
    dest.join("rootfs")
}

#[test]
fn unpack_matches_umoci_and_runs_in_the_container() {
    let w = user_dir();
    let image = umoci_image(&w.path().join("img"));
    let home = w.path().join("home");
    let id = ok(&home, &["image", "import", &image]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let mine = w.path().join("mine");
    ok(&home, &["image", "unpack", &image, mine.to_str().unwrap()]);
    let peer = umoci_unpack(&image, &w.path().join("peer"));
    assert_same_tree(&mine, &peer);
    assert!(!mine.join("a/f1").exists() && mine.join("a/f2/in").is_file());
    // A second import is a warm no-op and `ls` lists one image.
    ok(&home, &["image", "import", &image]);
    let ls = ok(&home, &["image", "ls", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ls).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["layers"].as_array().unwrap().len(), 3);

    // The same image as the container's rootfs: overlay honours the xattr
    // whiteouts and opaque markers, Env and WorkingDir apply, --env wins.
    let o = common::pinfold()
        .env("PINFOLD_HOME", &home)
        .args(["exec", "--image", &image, "-e", "BAR=cli", "--", "/bin/sh", "-c"])
        .arg("echo $FOO $BAR; pwd; test ! -e /a/f1 && echo f1-gone; cat /d/new /a/f2/in /top; ls /d; test -L /e && echo e-link")
        .output()
        .unwrap();
    let (c, so, se) = out(&o);
    assert_eq!(c, 0, "exec --image failed: {se}");
    assert_eq!(so, "img cli\n/a\nf1-gone\nnew\nin\ntop\nnew\ne-link\n");
    let o = common::pinfold()
        .env("PINFOLD_HOME", &home)
        .args([
            "exec",
            "--image",
            &image,
            "-e",
            "FOO=cli",
            "--workdir",
            "/tmp",
            "--",
            "/bin/sh",
            "-c",
            "echo $FOO; pwd",
        ])
        .output()
        .unwrap();
    assert_eq!(out(&o).1, "cli\n/tmp\n");

    // rm + gc empty the cache.
    assert_eq!(rm_and_gc(&home, &image), 0);
}

/// Deletions as the container sees them: the image of
/// tests/make-whiteout-image.sh (a file and a directory deleted, a directory
/// deleted and re-created in the same layer and in a later one, opaque
/// directories with whiteouts inside, files replaced by directories and
/// back, a directory replaced by a symlink) listed inside `exec --image` by
/// tests/vm/list-tree.sh and compared file by file (path, type, mode, size,
/// content hash, symlink target) with `umoci unpack` by tests/vm/tree.py.
/// The VM matrix runs the same on each kernel.
#[test]
fn whiteouts_inside_the_container_match_umoci() {
    let w = user_dir();
    let dir = w.path().join("img");
    let o = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/make-whiteout-image.sh"
        ))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let image = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    // umoci's tree before the layout is opened up for the test user: the
    // modes must stay the image's.
    let peer = umoci_unpack(&image, &w.path().join("peer"));
    open_up(&dir);
    let home = w.path().join("home");
    let o = common::pinfold()
        .env("PINFOLD_HOME", &home)
        .args(["exec", "--image", &image, "--", "/bin/sh", "-c"])
        .arg(include_str!("vm/list-tree.sh"))
        .output()
        .unwrap();
    let (c, listing, se) = out(&o);
    assert_eq!(c, 0, "exec --image failed: {se}");
    let file = w.path().join("listing.txt");
    std::fs::write(&file, &listing).unwrap();
    let o = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vm/tree.py"))
        .args([&file, &peer])
        .output()
        .unwrap();
    let verdict = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "inside the container vs umoci: {verdict}"
    );
    assert_eq!(verdict.trim(), "match");
    // The same from `image unpack` (the layers flattened without the kernel).
    let mine = w.path().join("mine");
    ok(&home, &["image", "unpack", &image, mine.to_str().unwrap()]);
    assert_same_tree(&mine, &peer);
}

/// Writes a layout with tests/fixtures/mklayout.py; returns `oci:DIR:t`.
fn crafted(dir: &Path, spec: serde_json::Value) -> String {
    let mut c = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/mklayout.py"
        ))
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (tests/setup.sh installs it)");
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success());
    open_up(dir);
    format!("oci:{}:t", dir.display())
}

#[test]
fn opaque_dirs_match_umoci() {
    let w = user_dir();
    let image = crafted(
        &w.path().join("l"),
        serde_json::json!({"layers": [
            [{"name": "o", "type": "dir"}, {"name": "o/x", "data": "x"}, {"name": "k", "type": "dir"}, {"name": "k/a", "data": "a"}, {"name": "k/b", "data": "b"}],
            [{"name": "o", "type": "dir"}, {"name": "o/.wh..wh..opq"}, {"name": "o/y", "data": "y"}, {"name": "k", "type": "dir"}, {"name": "k/.wh.a"}, {"name": "dev0", "type": "char"}],
        ]}),
    );
    let home = w.path().join("home");
    let mine = w.path().join("mine");
    ok(&home, &["image", "unpack", &image, mine.to_str().unwrap()]);
    assert!(mine.join("o/y").exists() && !mine.join("o/x").exists() && !mine.join("k/a").exists());
    let peer = umoci_unpack(&image, &w.path().join("peer"));
    let _ = std::fs::remove_file(peer.join("dev0")); // umoci --rootless makes an empty file of a device
    assert_same_tree(&mine, &peer);
}

/// Hostile layers: each must leave everything outside the target as it was.
#[test]
fn hostile_layers_change_nothing_outside() {
    let w = user_dir();
    let outside = w.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), "original").unwrap();
    std::fs::set_permissions(
        outside.join("victim"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    open_up(w.path());
    sh(&format!(
        "chown -R --reference='{}' '{}'",
        w.path().display(),
        outside.display()
    ));
    let o = outside.display().to_string();
    let abs_pwn = format!("/tmp/pinfold-pwned-{}", std::process::id());
    let f = |n: &str, d: &str| serde_json::json!({"name": n, "data": d});
    let sl = |n: &str, t: &str| serde_json::json!({"name": n, "type": "symlink", "target": t});
    let cases: Vec<(&str, serde_json::Value)> = vec![
        (
            "dotdot",
            serde_json::json!([[
                f("../../../../outside/victim", "pwned"),
                f("a/../../../outside/victim", "pwned")
            ]]),
        ),
        (
            "absolute",
            serde_json::json!([[f(&abs_pwn, "pwned"), f(&format!("{o}/victim"), "pwned")]]),
        ),
        (
            "symlink same layer",
            serde_json::json!([[sl("evil", &o), f("evil/victim", "pwned")]]),
        ),
        (
            "symlink relative same layer",
            serde_json::json!([[sl("evil", "../../../../outside"), f("evil/victim", "pwned")]]),
        ),
        (
            "symlink lower layer",
            serde_json::json!([
                [sl("evil", &o)],
                [
                    f("evil/victim", "pwned"),
                    serde_json::json!({"name": "evil/new", "type": "dir"})
                ]
            ]),
        ),
        (
            "hardlink outside",
            serde_json::json!([[
                serde_json::json!({"name": "h", "type": "link", "target": format!("{o}/victim")})
            ]]),
        ),
        (
            "hardlink dotdot",
            serde_json::json!([[
                serde_json::json!({"name": "h", "type": "link", "target": "../../outside/victim"})
            ]]),
        ),
        (
            "hardlink through symlink",
            serde_json::json!([[
                sl("evil", &o),
                serde_json::json!({"name": "h", "type": "link", "target": "evil/victim"})
            ]]),
        ),
        (
            "whiteout dotdot",
            serde_json::json!([[f("x", "x")], [f("../../outside/.wh.victim", "")]]),
        ),
        (
            "whiteout through symlink",
            serde_json::json!([
                [sl("evil", &o)],
                [f("evil/.wh.victim", ""), f(".wh.evil", "")]
            ]),
        ),
        (
            "opaque through symlink",
            serde_json::json!([[sl("evil", &o)], [f("evil/.wh..wh..opq", "")]]),
        ),
        (
            "chmod through symlink",
            serde_json::json!([
                [sl("evil", &format!("{o}/victim"))],
                [serde_json::json!({"name": "evil", "type": "dir", "mode": 0o777})]
            ]),
        ),
        (
            "chmod through symlink same layer",
            serde_json::json!([[
                sl("evil", &format!("{o}/victim")),
                serde_json::json!({"name": "evil", "mode": 0o777, "data": "x"})
            ]]),
        ),
        (
            "device",
            serde_json::json!([[serde_json::json!({"name": "dev/null", "type": "char"})]]),
        ),
    ];
    let before = tree(
        w.path()
            .parent()
            .unwrap()
            .join(w.path().file_name().unwrap())
            .join("outside")
            .as_path(),
    );
    for (i, (name, layers)) in cases.into_iter().enumerate() {
        let dir = w.path().join(format!("case{i}"));
        std::fs::create_dir(&dir).unwrap();
        open_up(&dir);
        let image = crafted(&dir.join("layout"), serde_json::json!({"layers": layers}));
        sh(&format!(
            "chown -R --reference='{}' '{}'",
            w.path().display(),
            dir.display()
        ));
        let home = dir.join("home");
        let target = dir.join("out");
        let (c, _, e) = pf(
            &home,
            &["image", "unpack", &image, target.to_str().unwrap()],
        );
        assert!(c == 0 || e.starts_with("pinfold image: "), "{name}: {e}");
        assert_eq!(
            tree(&outside),
            before,
            "case {name:?} changed something outside ({e})"
        );
        assert_eq!(
            std::fs::metadata(outside.join("victim")).unwrap().mode() & 0o777,
            0o644,
            "{name}"
        );
        assert!(!Path::new(&abs_pwn).exists(), "{name}");
        // Nothing escaped the store either: every layer dir holds only its own names.
        if c == 0 {
            assert!(
                !target.join("evil/victim").exists()
                    || std::fs::symlink_metadata(target.join("evil"))
                        .unwrap()
                        .is_dir(),
                "{name}"
            );
        }
    }
}

#[test]
fn limits_are_enforced_with_a_clear_error() {
    let w = user_dir();
    let image = crafted(
        &w.path().join("l"),
        serde_json::json!({"layers": [[{"name": "a", "data": "aaaa"}, {"name": "b", "data": "bbbb"}, {"name": "c", "data": "c"}]]}),
    );
    let home = w.path().join("home");
    let (c, _, e) = pf(&home, &["image", "import", "--max-entries", "2", &image]);
    assert_ne!(c, 0);
    assert!(e.contains("--max-entries"), "{e}");
    let (c, _, e) = pf(
        &home,
        &["image", "import", "--max-unpacked-bytes", "5", &image],
    );
    assert_ne!(c, 0);
    assert!(e.contains("--max-unpacked-bytes"), "{e}");
    assert_eq!(
        std::fs::read_dir(home.join("images/layers"))
            .unwrap()
            .count(),
        0,
        "nothing half-written kept"
    );
    assert_eq!(
        std::fs::read_dir(home.join("images/tmp")).unwrap().count(),
        0
    );
}

#[test]
fn bad_input_gets_one_clear_line() {
    let w = user_dir();
    let home = w.path().join("home");
    let one =
        serde_json::json!([[{"name": "a", "data": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}]]);
    let mismatch = crafted(
        &w.path().join("m"),
        serde_json::json!({"layers": one, "corrupt": "digest"}),
    );
    let truncated = crafted(
        &w.path().join("t"),
        serde_json::json!({"layers": one, "corrupt": "truncate"}),
    );
    let badtype = crafted(
        &w.path().join("u"),
        serde_json::json!({"layers": one, "layer_media_type": "application/vnd.example.weird"}),
    );
    let d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["pull".into(), "ftp://example.com/x".into()],
            "unknown transport",
        ),
        (
            vec!["import".into(), "dir:/tmp".into()],
            "unknown transport",
        ),
        (
            vec!["pull".into(), "127.0.0.1:1/busybox:latest".into()],
            "names no digest",
        ),
        (vec!["import".into(), mismatch], "hashes to"),
        (vec!["import".into(), truncated], "size is"),
        (vec!["import".into(), badtype], "unsupported media type"),
        (
            vec!["pull".into(), format!("127.0.0.1:1/busybox@{d}")],
            "unreachable",
        ),
    ];
    for (args, want) in cases {
        let mut a = vec!["image"];
        a.extend(args.iter().map(String::as_str));
        let (c, _, e) = pf(&home, &a);
        assert_ne!(c, 0, "{a:?}");
        assert!(e.contains(want), "{a:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{a:?}: {e}");
    }
    assert_eq!(
        std::fs::read_dir(home.join("images/layers"))
            .unwrap()
            .count(),
        0,
        "nothing half-written kept"
    );
    // exec reports image errors as 125.
    let o = common::pinfold()
        .env("PINFOLD_HOME", &home)
        .args(["exec", "--image", "ftp://x/y", "--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    let o = common::pinfold()
        .env("PINFOLD_HOME", &home)
        .args(["exec", "--image", "127.0.0.1:1/x:latest", "--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(125),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Debian's docker-registry on 127.0.0.1, its storage in a temp dir.
struct RegistryProc {
    child: Child,
    host: String,
}

impl Drop for RegistryProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path, htpasswd: Option<&Path>) -> RegistryProc {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let auth = htpasswd
        .map(|p| {
            format!(
                "auth:\n  htpasswd:\n    realm: pinfold-test\n    path: {}\n",
                p.display()
            )
        })
        .unwrap_or_default();
    let cfg = dir.join("config.yml");
    std::fs::create_dir_all(dir.join("storage")).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n{auth}",
            dir.join("storage").display()
        ),
    )
    .unwrap();
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry (tests/setup.sh installs it)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&host).is_ok() {
            return RegistryProc { child, host };
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("docker-registry did not start on {host}");
}

fn push(image: &str, host: &str, creds: Option<&str>, digestfile: &Path) -> String {
    let creds = creds
        .map(|c| format!("--dest-creds {c}"))
        .unwrap_or_default();
    sh(&format!(
        "skopeo copy -q --dest-tls-verify=false {creds} --digestfile '{}' '{image}' docker://{host}/pinfold/test:1",
        digestfile.display()
    ));
    std::fs::read_to_string(digestfile)
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn pull_from_a_real_registry_anonymous_and_with_basic_auth() {
    let w = user_dir();
    let image = umoci_image(&w.path().join("img"));
    let peer = umoci_unpack(&image, &w.path().join("peer"));

    let reg = start_registry(&w.path().join("reg"), None);
    let digest = push(&image, &reg.host, None, &w.path().join("digest"));
    let home = w.path().join("home");
    let pinned = format!("docker://{}/pinfold/test@{digest}", reg.host);
    assert_eq!(ok(&home, &["image", "pull", &pinned]).trim(), pinned);
    let mine = w.path().join("mine");
    ok(&home, &["image", "unpack", &pinned, mine.to_str().unwrap()]);
    assert_same_tree(&mine, &peer);
    // A tag only with --allow-tag, printed pinned.
    let tagged = format!("{}/pinfold/test:1", reg.host);
    assert_ne!(pf(&home, &["image", "pull", &tagged]).0, 0);
    assert_eq!(
        ok(&home, &["image", "pull", "--allow-tag", &tagged]).trim(),
        pinned
    );
    drop(reg);
    // Down: a clear error.
    let (c, _, e) = pf(&w.path().join("home2"), &["image", "pull", &pinned]);
    assert_ne!(c, 0);
    assert!(e.contains("unreachable"), "{e}");

    // htpasswd: refused without credentials, pulled with REGISTRY_AUTH_FILE.
    let htpasswd = w.path().join("htpasswd");
    sh(&format!(
        "htpasswd -Bbn ci s3cret > '{}'",
        htpasswd.display()
    ));
    let reg = start_registry(&w.path().join("reg2"), Some(&htpasswd));
    let digest = push(
        &image,
        &reg.host,
        Some("ci:s3cret"),
        &w.path().join("digest2"),
    );
    let pinned = format!("docker://{}/pinfold/test@{digest}", reg.host);
    let home = w.path().join("home3");
    let (c, _, e) = pf(&home, &["image", "pull", &pinned]);
    assert_ne!(c, 0);
    assert!(e.contains("refused access"), "{e}");
    let authfile = w.path().join("auth.json");
    let bad = format!(
        r#"{{"auths":{{"{}":{{"auth":"Y2k6d3Jvbmc="}}}}}}"#,
        reg.host
    ); // ci:wrong
    std::fs::write(&authfile, bad).unwrap();
    open_up(&authfile);
    let run = |home: &Path| {
        out(&common::pinfold()
            .env("PINFOLD_HOME", home)
            .env("REGISTRY_AUTH_FILE", &authfile)
            .args(["image", "pull", &pinned])
            .output()
            .unwrap())
    };
    let (c, _, e) = run(&home);
    assert_ne!(c, 0);
    assert!(e.contains("refused access"), "{e}");
    let good = format!(
        r#"{{"auths":{{"{}":{{"auth":"Y2k6czNjcmV0"}}}}}}"#,
        reg.host
    ); // ci:s3cret
    std::fs::write(&authfile, good).unwrap();
    let (c, _, e) = run(&home);
    assert_eq!(c, 0, "{e}");
}

fn busybox_path() -> String {
    let o = Command::new("sh")
        .args(["-c", "command -v busybox"])
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

/// Two layers (a whiteout, a hardlink, a symlink, a busybox to run) used by
/// the format and gc tests.
fn two_layers() -> serde_json::Value {
    serde_json::json!([
        [{"name": "bin", "type": "dir"}, {"name": "bin/busybox", "from": busybox_path(), "mode": 0o755},
         {"name": "bin/sh", "type": "symlink", "target": "busybox"},
         {"name": "etc", "type": "dir"}, {"name": "etc/one", "data": "one\n"},
         {"name": "etc/hard", "type": "link", "target": "etc/one"}, {"name": "etc/gone", "data": "x"}],
        [{"name": "etc", "type": "dir"}, {"name": "etc/.wh.gone"}, {"name": "etc/two", "data": "two\n"},
         {"name": "top", "data": "top\n"}],
    ])
}

/// Every layout and layer encoding the issue names gives the same tree:
/// gzip, multi-member gzip, zstd (two frames), uncompressed, a nested index
/// with a foreign-platform decoy first, an oci-archive, and a
/// docker-archive written by skopeo.
#[test]
fn every_layout_and_compression_unpacks_the_same_tree() {
    let w = user_dir();
    let home = w.path().join("home");
    let mut refs = Vec::new();
    for (name, extra) in [
        ("gzip", serde_json::json!({})),
        (
            "gzip-multi",
            serde_json::json!({"compression": "gzip-multi"}),
        ),
        ("zstd", serde_json::json!({"compression": "zstd"})),
        ("none", serde_json::json!({"compression": "none"})),
        ("nested", serde_json::json!({"nested": true})),
    ] {
        let mut spec = extra;
        spec["layers"] = two_layers();
        refs.push((name, crafted(&w.path().join(name), spec)));
    }
    let layout = w.path().join("gzip");
    // The archives, made from the gzip layout by a command in which
    // {layout} and {out} stand for the paths, readable by the test user.
    for (name, file, make, reference) in [
        (
            "oci-archive",
            "oci.tar",
            "tar -C {layout} -cf {out} .",
            "oci-archive:{out}:t",
        ),
        (
            "docker-archive",
            "docker.tar",
            "skopeo copy -q oci:{layout}:t docker-archive:{out}:t:latest",
            "docker-archive:{out}",
        ),
    ] {
        let out = w.path().join(file).display().to_string();
        let make = make
            .replace("{layout}", &layout.display().to_string())
            .replace("{out}", &out);
        sh(&format!("{make} && chmod a+r {out}"));
        refs.push((name, reference.replace("{out}", &out)));
    }

    let first = w.path().join("unpacked-gzip");
    for (name, r) in &refs {
        let dest = w.path().join(format!("unpacked-{name}"));
        ok(&home, &["image", "import", r]);
        ok(&home, &["image", "unpack", r, dest.to_str().unwrap()]);
        assert_eq!(
            std::fs::read_to_string(dest.join("top")).unwrap(),
            "top\n",
            "{name}"
        );
        assert!(
            !dest.join("etc/gone").exists() && !dest.join("decoy").exists(),
            "{name}: whiteout or platform selection ignored"
        );
        let (a, b) = (
            std::fs::metadata(dest.join("etc/one")).unwrap(),
            std::fs::metadata(dest.join("etc/hard")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "{name}: hardlink not kept");
        assert_same_tree(&first, &dest);
    }
    // The zstd and gzip layouts share diff_ids, so the layer cache holds
    // each of the two layers once, whatever the encoding.
    assert_eq!(
        std::fs::read_dir(home.join("images/layers"))
            .unwrap()
            .count(),
        2
    );
}

/// `image rm` and `gc` while a container runs on the image: the job keeps
/// its layers to the end, and the next gc frees them.
#[test]
fn gc_leaves_the_layers_of_a_running_container_alone() {
    let w = user_dir();
    let home = w.path().join("home");
    let image = crafted(
        &w.path().join("l"),
        serde_json::json!({"layers": two_layers()}),
    );
    ok(&home, &["image", "import", &image]);
    let started = w.path().join("started");
    std::fs::create_dir(&started).unwrap();
    std::fs::set_permissions(&started, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut job = common::pinfold()
        .env("PINFOLD_HOME", &home)
        .args(["exec", "--image", &image, "--bind"])
        .arg(format!("{}:/started:rw", started.display()))
        .args([
            "--",
            "/bin/sh",
            "-c",
            "echo > /started/yes || exit 3; while [ ! -e /started/go ]; do busybox usleep 20000; done; busybox cat /etc/one /etc/two /top",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !started.join("yes").exists() {
        if std::time::Instant::now() > deadline {
            let _ = job.kill();
            panic!("the job never started");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Whatever happens below, the job ends (it waits for this file).
    struct Job(Option<Child>, PathBuf);
    impl Drop for Job {
        fn drop(&mut self) {
            let _ = std::fs::write(&self.1, "");
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut guard = Job(Some(job), started.join("go"));
    ok(&home, &["image", "rm", &image]);
    ok(&home, &["image", "gc"]);
    let layers = || {
        std::fs::read_dir(home.join("images/layers"))
            .unwrap()
            .count()
    };
    assert_eq!(layers(), 2, "gc removed layers a running container uses");
    let job = guard.0.take().unwrap();
    drop(guard);
    let o = job.wait_with_output().unwrap();
    assert_eq!(out(&o).1, "one\ntwo\ntop\n");
    assert_eq!(o.status.code(), Some(0));
    ok(&home, &["image", "gc"]);
    assert_eq!(layers(), 0, "gc kept layers after the container ended");
}

/// The image's owners, spread over the container's id range: with the test
/// user's sub-id range (`tests/setup.sh` gives it one), inside the container
/// every file has the owner the image gave it (and the access that goes with
/// it), ids beyond the range are squashed to root, set-id bits are dropped
/// (issue 13: a setuid-root file of an image, owned by the CI user in the
/// store, was runnable by any local user); `image unpack` and rm + gc still work, though
/// the layer files now belong to sub-ids on the host. As real root the same
/// holds with the root id range.
/// `find STORE -perm /6000` finds nothing and the store is 0700: no other
/// local user reaches the layers, and none of their files is set-id.
fn assert_no_set_id_and_private(store: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", store.display());
    let found = common::host_sh(&format!(
        "find '{}' ! -type d -perm /6000 -print",
        store.display()
    ));
    assert_eq!(found.trim(), "", "set-id files in the store");
}

#[test]
fn image_owners_are_kept_inside_the_container() {
    let w = user_dir();
    let mut layers = two_layers();
    for e in serde_json::json!([
        {"name": "home", "type": "dir"},
        {"name": "home/u", "type": "dir", "uid": 1000, "gid": 1000, "mode": 0o700},
        {"name": "home/u/f", "data": "mine\n", "uid": 1000, "gid": 1001, "mode": 0o600},
        {"name": "apt", "data": "a", "uid": 42, "gid": 42, "mode": 0o4755},
        {"name": "far", "data": "b", "uid": 100000, "gid": 100000},
    ])
    .as_array()
    .unwrap()
    {
        layers[1].as_array_mut().unwrap().push(e.clone());
    }
    let image = crafted(&w.path().join("l"), serde_json::json!({"layers": layers}));
    // Container root has no capabilities (all are dropped), so uid 1000's
    // 0700 directory is closed to it: the owners are real, not a label.
    let script = "busybox stat -c '%u:%g %a' /home/u /apt /far; \
                  busybox cat /home/u/f 2>/dev/null || echo refused";
    let want = "1000:1000 700\n42:42 755\n0:0 644\nrefused\n";
    // The test user, with a sub-id range.
    let home = w.path().join("home");
    ok(&home, &["image", "import", &image]);
    assert_no_set_id_and_private(&home.join("images"));
    if common::is_root() {
        let mode = std::fs::read_to_string(home.join("images/ownership")).unwrap();
        assert!(mode.starts_with("subids "), "{mode}");
    }
    let o = common::pinfold()
        .env("PINFOLD_HOME", &home)
        .args(["exec", "--image", &image, "--", "/bin/sh", "-c", script])
        .output()
        .unwrap();
    let (c, so, se) = out(&o);
    assert_eq!((c, so.as_str()), (0, want), "{se}");
    let flat = w.path().join("flat");
    ok(&home, &["image", "unpack", &image, flat.to_str().unwrap()]);
    let f = flat.join("home/u/f");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "mine\n");
    if let Some((uid, _)) = common::fixtures().user {
        assert_eq!(
            std::fs::metadata(&f).unwrap().uid(),
            uid,
            "unpack output is the caller's"
        );
    }
    assert_eq!(
        rm_and_gc(&home, &image),
        0,
        "gc could not remove layer files owned by sub-ids"
    );

    // Real root: chowned straight onto the unprivileged range its containers map.
    if common::is_root() {
        let home = w.path().join("roothome");
        let root = |args: &[&str]| {
            let o = Command::new(&common::fixtures().pinfold)
                .env("PINFOLD_HOME", &home)
                .env("PINFOLD_ROOT_IDMAP", "1879048192:65536")
                .args(args)
                .output()
                .unwrap();
            out(&o)
        };
        assert_eq!(root(&["image", "import", &image]).0, 0);
        let (c, so, se) = root(&["exec", "--image", &image, "--", "/bin/sh", "-c", script]);
        assert_eq!((c, so.as_str()), (0, want), "{se}");
        let md = std::fs::metadata(home.join("images/layers"))
            .and_then(|_| {
                let l = std::fs::read_dir(home.join("images/layers"))?
                    .map(|e| e.unwrap().path())
                    .find(|p| p.join("apt").exists())
                    .unwrap();
                std::fs::symlink_metadata(l.join("apt"))
            })
            .unwrap();
        assert_eq!((md.uid(), md.gid()), (1879048192 + 42, 1879048192 + 42));
    }
}

/// A file that is not an archive is refused without a word of it: a job
/// may name the path (`image: oci-archive:/home/runner/.docker/config.json`),
/// and the tar reader's own error quoted the file's first bytes.
#[test]
fn a_file_that_is_not_an_archive_is_refused_without_quoting_it() {
    let d = user_dir();
    let f = d.path().join("secret.txt");
    std::fs::write(&f, "SECRETMARKER".repeat(100)).unwrap();
    let digest = "0".repeat(64);
    for r in [
        format!("oci-archive:{}", f.display()),
        format!("oci-archive:{}@sha256:{digest}", f.display()),
        format!("docker-archive:{}", f.display()),
    ] {
        let out = common::pinfold()
            .env("PINFOLD_HOME", d.path().join("home"))
            .args(["image", "import", &r])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{r}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a readable tar archive"), "{r}: {err}");
        assert!(!err.contains("MARKER"), "{r}: {err}");
    }
}

/// A store of the older format (format 1: layers kept whiteouts Linux
/// before 6.7 ignores) is upgraded on first use: its images are set aside
/// (and listed no more), the next `exec --image` fetches the image again
/// and runs, and `image gc` removes what was set aside.
#[test]
fn an_older_store_is_upgraded_and_its_images_fetched_again() {
    let w = user_dir();
    let image = umoci_image(&w.path().join("img"));
    let home = w.path().join("home");
    ok(&home, &["image", "import", &image]);
    let format = home.join("images/format");
    let now = std::fs::read_to_string(&format).expect("the store's format file");
    assert_ne!(now.trim(), "1");
    std::fs::write(&format, "1\n").unwrap();

    let (c, ls, err) = pf(&home, &["image", "ls", "--json"]);
    assert_eq!(c, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ls).unwrap(),
        serde_json::json!([])
    );
    assert!(
        err.contains("upgraded to format"),
        "no word of the upgrade: {err}"
    );
    assert_eq!(std::fs::read_to_string(&format).unwrap(), now);
    let aside = || {
        std::fs::read_dir(home.join("images/tmp"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("format1-"))
            .count()
    };
    assert!(aside() > 0, "nothing was set aside");

    let o = common::pinfold()
        .env("PINFOLD_HOME", &home)
        .args(["exec", "--image", &image, "--", "/bin/cat", "/d/new"])
        .output()
        .unwrap();
    let (c, so, se) = out(&o);
    assert_eq!((c, so.as_str()), (0, "new\n"), "{se}");
    ok(&home, &["image", "gc"]);
    assert_eq!(aside(), 0, "image gc left the old format's files");
}
