//! The kernel command line: what machined takes from it (network settings, the config URL,
//! kernel log shipping).

use std::net::IpAddr;

/// What machined takes from the kernel command line (network settings, kernel log shipping).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Cmdline {
    /// The value of `ip=`.
    pub ip: Option<String>,
    /// `talos.hostname=`.
    pub hostname: Option<String>,
    /// `talos.network.interface.ignore=` (may repeat).
    pub ignore: Vec<String>,
    /// `talos.logging.kernel=`: where the kernel log is shipped (may repeat).
    pub logging_kernel: Vec<String>,
    /// `talos.config=`: where a machine without a config fetches one.
    pub config_url: Option<String>,
}

impl Cmdline {
    pub fn parse(text: &str) -> Cmdline {
        let mut c = Cmdline::default();
        for arg in text.split_whitespace() {
            match arg.split_once('=') {
                Some(("ip", v)) => c.ip = Some(v.into()),
                Some(("talos.hostname", v)) => c.hostname = Some(v.into()),
                Some(("talos.network.interface.ignore", v)) => c.ignore.push(v.into()),
                Some(("talos.logging.kernel", v)) => c.logging_kernel.push(v.into()),
                Some(("talos.config", v)) => c.config_url = Some(v.into()),
                _ => {}
            }
        }
        c
    }

    /// This kernel's command line (a container-mode node has its own bound over
    /// `/proc/cmdline`).
    pub fn read() -> Cmdline {
        Cmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
    }
}

/// `ip=<client>:<server>:<gateway>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>:<ntp0>`
/// (IPv6 addresses in brackets); `ip=dhcp` alone asks for DHCP on any link.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IpParam {
    pub address: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    pub hostname: String,
    pub device: String,
    pub dhcp: bool,
    pub dns: Vec<IpAddr>,
    pub ntp: Vec<IpAddr>,
}

fn split_fields(v: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut bracket = false;
    for ch in v.chars() {
        match ch {
            '[' => bracket = true,
            ']' => bracket = false,
            ':' if !bracket => out.push(String::new()),
            _ => out.last_mut().expect("one field").push(ch),
        }
    }
    out
}

fn netmask_prefix(mask: &str) -> Result<u8, String> {
    if let Ok(n) = mask.parse::<u8>() {
        return Ok(n);
    }
    let ip: std::net::Ipv4Addr = mask
        .parse()
        .map_err(|_| format!("netmask {mask:?} is neither dotted nor a prefix length"))?;
    let bits = u32::from(ip);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(format!("netmask {mask} is not contiguous"));
    }
    Ok(bits.leading_ones() as u8)
}

impl IpParam {
    pub fn parse(v: &str) -> Result<IpParam, String> {
        let mut p = IpParam::default();
        if matches!(v, "dhcp" | "on" | "any") {
            p.dhcp = true;
            return Ok(p);
        }
        let f = split_fields(v);
        let field = |i: usize| f.get(i).map(String::as_str).unwrap_or("");
        let ip = |i: usize| -> Result<Option<IpAddr>, String> {
            match field(i) {
                "" => Ok(None),
                s => s
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("field {} ({s:?}) is not an IP address", i + 1)),
            }
        };
        if !field(0).is_empty() {
            let (addr, prefix) = match field(0).split_once('/') {
                Some((a, p)) => (a, Some(p.to_string())),
                None => (field(0), None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("client address {addr:?} is not an IP address"))?;
            let prefix = match (prefix, field(3)) {
                (Some(p), _) => p.parse().map_err(|_| format!("bad prefix length {p:?}"))?,
                (None, "") => {
                    return Err(format!("client address {addr} comes without a netmask"));
                }
                (None, mask) => netmask_prefix(mask)?,
            };
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if prefix > max {
                return Err(format!("prefix length {prefix} is longer than {max}"));
            }
            p.address = Some((addr, prefix));
        }
        p.gateway = ip(2)?;
        p.hostname = field(4).into();
        p.device = field(5).into();
        p.dhcp = matches!(field(6), "dhcp" | "on" | "any");
        p.dns = [ip(7)?, ip(8)?].into_iter().flatten().collect();
        p.ntp = ip(9)?.into_iter().collect();
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_param_fields() {
        let p = IpParam::parse(
            "10.5.0.2::10.5.0.1:255.255.255.0:node-1:eth0:off:1.1.1.1:9.9.9.9:10.0.0.9",
        )
        .unwrap();
        assert_eq!(p.address, Some(("10.5.0.2".parse().unwrap(), 24)));
        assert_eq!(p.gateway, Some("10.5.0.1".parse().unwrap()));
        assert_eq!(
            (p.hostname.as_str(), p.device.as_str(), p.dhcp),
            ("node-1", "eth0", false)
        );
        assert_eq!(p.dns.len(), 2);
        assert_eq!(p.ntp, vec!["10.0.0.9".parse::<IpAddr>().unwrap()]);
        let v6 = IpParam::parse("[fd00::2]::[fd00::1]:64::eth0:off").unwrap();
        assert_eq!(v6.address, Some(("fd00::2".parse().unwrap(), 64)));
        assert_eq!(v6.gateway, Some("fd00::1".parse().unwrap()));
        assert!(IpParam::parse("dhcp").unwrap().dhcp);
        assert!(IpParam::parse(":::::eth1:dhcp").unwrap().dhcp);
        for (bad, why) in [
            ("10.5.0.2::10.5.0.1", "without a netmask"),
            ("10.5.0.2::10.5.0.1:255.0.255.0", "not contiguous"),
            ("10.5.0.300/24", "not an IP address"),
            ("10.5.0.2/40", "longer than 32"),
            ("10.5.0.2/24::gw", "field 3"),
        ] {
            let e = IpParam::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
