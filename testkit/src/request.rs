//! Requests as RESP multibulk bytes.

/// Anything that can be a request argument.
pub trait IntoArg {
    fn into_arg(self) -> Vec<u8>;
}

impl IntoArg for &str {
    fn into_arg(self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}
impl IntoArg for String {
    fn into_arg(self) -> Vec<u8> {
        self.into_bytes()
    }
}
impl IntoArg for &String {
    fn into_arg(self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}
impl IntoArg for &[u8] {
    fn into_arg(self) -> Vec<u8> {
        self.to_vec()
    }
}
impl<const N: usize> IntoArg for &[u8; N] {
    fn into_arg(self) -> Vec<u8> {
        self.to_vec()
    }
}
impl IntoArg for Vec<u8> {
    fn into_arg(self) -> Vec<u8> {
        self
    }
}
impl IntoArg for &Vec<u8> {
    fn into_arg(self) -> Vec<u8> {
        self.clone()
    }
}
macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl IntoArg for $t {
            fn into_arg(self) -> Vec<u8> {
                self.to_string().into_bytes()
            }
        }
    )*};
}
int_arg!(u64, i64, u32, i32, usize);

/// `args!["LOCK.TRY", key, owner, "PX", 500]` → `Vec<Vec<u8>>`.
#[macro_export]
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        <::std::vec::Vec<::std::vec::Vec<u8>>>::from([$($crate::IntoArg::into_arg($arg)),*])
    };
}

/// Appends one request as RESP multibulk bytes to `out` (a pipeline is several calls).
pub fn encode_into<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// One request as RESP multibulk bytes.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, args);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_multibulk_with_binary_and_empty_arguments() {
        assert_eq!(encode(&args!["PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(encode(&[&b"a\r\nb"[..], b""]), b"*2\r\n$4\r\na\r\nb\r\n$0\r\n\r\n");
        assert_eq!(encode::<&[u8]>(&[]), b"*0\r\n");
    }

    #[test]
    fn a_pipeline_is_requests_back_to_back() {
        let mut out = Vec::new();
        encode_into(&mut out, &["GET", "k"]);
        encode_into(&mut out, &args!["PX", 500_u64, -1_i64]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$2\r\nPX\r\n$3\r\n500\r\n$2\r\n-1\r\n");
    }
}
