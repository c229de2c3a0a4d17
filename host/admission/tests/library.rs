//! The policy library (`policies/*/`): every folder's `policy.yaml` compiles
//! and passes every case of its `cases.yaml`, run as `kapsel policy test
//! policies` runs them. A folder without cases, or whose cases never deny
//! (or never admit), fails: a policy is only as good as the cases showing
//! what it refuses and what it lets through.

use std::path::PathBuf;

use kapsel_admission::cases;

fn library() -> PathBuf {
    let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.ancestors().nth(2).expect("the workspace root").join("policies")
}

#[test]
fn every_policy_passes_its_cases() {
    let reports = cases::run_all(&library()).expect("policies/ is readable");
    assert!(reports.len() >= 8, "the library holds {} policies, expected at least 8", reports.len());
    let mut failures = Vec::new();
    for report in &reports {
        let (passed, failed) = report.counts();
        if failed > 0 {
            failures.push(report.to_string().lines().filter(|l| !l.starts_with("PASS")).collect::<Vec<_>>().join("\n"));
            continue;
        }
        let cases = report.outcome.as_ref().expect("ran");
        let mut problems = Vec::new();
        if !cases.iter().any(|c| !c.expected_allowed) {
            problems.push("no case is denied");
        }
        if !cases.iter().any(|c| c.expected_allowed) {
            problems.push("no case is admitted");
        }
        if !problems.is_empty() {
            failures.push(format!("FAIL  {} ({passed} cases): {}", report.policy, problems.join(", ")));
        }
    }
    assert!(failures.is_empty(), "policy cases failed:\n{}", failures.join("\n"));
}

#[test]
fn denied_cases_say_which_messages_they_expect() {
    for dir in cases::policy_dirs(&library()).expect("policies/ is readable") {
        let text = std::fs::read_to_string(dir.join(cases::CASES_FILE)).unwrap_or_default();
        let file: serde_json::Value = serde_saphyr::from_str(&text).unwrap_or_default();
        for case in file["cases"].as_array().into_iter().flatten() {
            if case["allowed"] == false {
                assert!(
                    case.get("messages").is_some() || case.get("contains").is_some(),
                    "{}: case {:?} is denied but names no expected message (messages or contains)",
                    dir.display(),
                    case["name"]
                );
            }
        }
    }
}

#[test]
fn a_wrong_case_or_a_folder_without_cases_fails_readably() {
    let temp = std::env::temp_dir().join(format!("kapsel-library-test-{}", std::process::id()));
    let policy = std::fs::read_to_string(library().join("required-labels").join(cases::POLICY_FILE)).expect("required-labels");
    let wrong = temp.join("wrong");
    let bare = temp.join("bare");
    std::fs::create_dir_all(&wrong).unwrap();
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::write(wrong.join(cases::POLICY_FILE), &policy).unwrap();
    std::fs::write(bare.join(cases::POLICY_FILE), &policy).unwrap();
    std::fs::write(
        wrong.join(cases::CASES_FILE),
        r#"cases:
  - name: claims an unlabelled pod is admitted
    object: {apiVersion: v1, kind: Pod, metadata: {name: web, namespace: dev}, spec: {containers: [{name: main, image: "r/web:1"}]}}
    allowed: true
    messages: []
"#,
    )
    .unwrap();
    let reports = cases::run_all(&temp).unwrap();
    let _ = std::fs::remove_dir_all(&temp);
    assert_eq!(reports.iter().map(|r| r.policy.as_str()).collect::<Vec<_>>(), ["bare", "wrong"]);
    assert_eq!(reports[0].counts(), (0, 1));
    let bare_text = reports[0].to_string();
    assert!(bare_text.starts_with("FAIL  bare\n") && bare_text.contains("cases.yaml is missing"), "{bare_text}");
    let text = reports[1].to_string();
    assert!(text.starts_with("FAIL  wrong / claims an unlabelled pod is admitted\n"), "{text}");
    assert!(text.contains("allowed: expected true, got false"), "{text}");
    assert!(text.contains(r#"got      ["you must provide labels: {\"cost-center\"}"]"#), "{text}");
}
