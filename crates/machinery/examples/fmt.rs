fn main() {
    let path = std::env::args().nth(1).expect("file");
    match machinery::Config::load(&path) {
        Ok(c) => {
            println!("{:?}", c.documents()[0].value);
            print!("{}", c.encode_canonical())
        }
        Err(e) => eprintln!("{e}"),
    }
}
