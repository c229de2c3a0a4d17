//! `hello`: prints a greeting, the arguments it was given and the value of
//! `GREETING` when set, then exits 0. Shows that args and env reach a pod.

fn main() {
    println!("Hello from Kapsel");
    let args: Vec<String> = std::env::args().collect();
    println!("args: {}", args.join(" "));
    if let Ok(greeting) = std::env::var("GREETING") {
        println!("GREETING={greeting}");
    }
}
