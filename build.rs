// `sqlx::migrate!` embeds the migrations at compile time, and cargo does not know it reads
// them: without this a new migration file left an incremental build's binary without it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
