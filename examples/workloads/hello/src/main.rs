//! `hello`: prints a greeting, the arguments it was given and the value of
//! `GREETING` when set, then exits 0. Shows that args and env reach a pod.
//! With `--env NAME` it also prints `NAME=<value>`, and with `--cat PATH`
//! the contents of the file at `PATH` (a ConfigMap or Secret volume's file,
//! say), so a pod's configuration can be seen in its log; a file it cannot
//! read is reported and makes it exit 1.

fn main() {
    println!("Hello from Kapsel");
    let args: Vec<String> = std::env::args().collect();
    println!("args: {}", args.join(" "));
    if let Ok(greeting) = std::env::var("GREETING") {
        println!("GREETING={greeting}");
    }
    let mut failed = false;
    for pair in args.windows(2) {
        match pair[0].as_str() {
            "--env" => println!("{}={}", pair[1], std::env::var(&pair[1]).unwrap_or_default()),
            "--cat" => match std::fs::read_to_string(&pair[1]) {
                Ok(text) => println!("{}: {text}", pair[1]),
                Err(error) => {
                    eprintln!("cannot read {}: {error}", pair[1]);
                    failed = true;
                }
            },
            _ => {}
        }
    }
    if failed {
        std::process::exit(1);
    }
}
