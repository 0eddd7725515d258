fn main() {
    std::process::exit(catchup::cli::main());
}
