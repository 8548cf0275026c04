raindrop::app!();

fn main() {}
