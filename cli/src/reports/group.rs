//! Loopback ports grouped by class: a suite that starts hundreds of local servers on ephemeral
//! ports gets one row per program and port class instead of one per port.

use std::collections::BTreeMap;

use super::Dest;

/// From this many distinct loopback ports in one class (same decision and protocol), the class
/// is shown as groups.
pub const GROUP_MIN: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortClass {
    /// Below 1024.
    System,
    /// 1024 up to the start of the ephemeral range.
    Registered,
    /// The kernel's ephemeral range (`net.ipv4.ip_local_port_range`, 32768 up by default) and
    /// above: ports a server bound to port 0 gets, different on every run.
    Ephemeral,
}

impl PortClass {
    pub fn of(port: u16, ephemeral_from: u16) -> PortClass {
        if port < 1024 {
            PortClass::System
        } else if port < ephemeral_from {
            PortClass::Registered
        } else {
            PortClass::Ephemeral
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PortClass::System => "ports below 1024",
            PortClass::Registered => "registered ports",
            PortClass::Ephemeral => "ephemeral ports",
        }
    }
}

/// Where the kernel's ephemeral port range starts (32768 when it cannot be read).
pub fn ephemeral_from() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// Loopback destinations of one program, decision, protocol and port class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub deny: bool,
    pub enforced: bool,
    pub proto: Option<String>,
    pub class: PortClass,
    pub program: String,
    pub ports: usize,
    pub lo: u16,
    pub hi: u16,
    pub count: u64,
    pub new: bool,
}

impl Group {
    pub fn shown(&self) -> String {
        format!(
            "loopback {} ({} ports, {}-{})",
            self.class.name(),
            self.ports,
            self.lo,
            self.hi
        )
    }
}

pub enum Row<'a> {
    One(&'a Dest),
    Group(Group),
}

impl Row<'_> {
    pub fn deny(&self) -> bool {
        match self {
            Row::One(d) => d.key.deny,
            Row::Group(g) => g.deny,
        }
    }

    pub fn count(&self) -> u64 {
        match self {
            Row::One(d) => d.count,
            Row::Group(g) => g.count,
        }
    }
}

/// The destinations as rows: denied first, then by count (most first); loopback ports of a
/// class with [`GROUP_MIN`] or more distinct ports become one row per program.
pub fn rows(dests: &[Dest], ephemeral_from: u16) -> Vec<Row<'_>> {
    type ClassKey = (bool, Option<String>, PortClass);
    let mut classes: BTreeMap<ClassKey, Vec<&Dest>> = BTreeMap::new();
    let mut rows = Vec::new();
    for d in dests {
        match d.key.port {
            Some(port) if d.key.is_loopback() && !d.key.lookup => classes
                .entry((
                    d.key.deny,
                    d.key.proto.clone(),
                    PortClass::of(port, ephemeral_from),
                ))
                .or_default()
                .push(d),
            _ => rows.push(Row::One(d)),
        }
    }
    for ((deny, proto, class), members) in classes {
        let mut ports: Vec<u16> = members.iter().filter_map(|d| d.key.port).collect();
        ports.sort_unstable();
        ports.dedup();
        if ports.len() < GROUP_MIN {
            rows.extend(members.into_iter().map(Row::One));
            continue;
        }
        let mut per_program: BTreeMap<&str, Group> = BTreeMap::new();
        let mut program_ports: BTreeMap<&str, Vec<u16>> = BTreeMap::new();
        for d in members {
            let port = d.key.port.unwrap_or(0);
            for (program, &count) in &d.programs {
                let g = per_program.entry(program).or_insert_with(|| Group {
                    deny,
                    enforced: false,
                    proto: proto.clone(),
                    class,
                    program: program.clone(),
                    ports: 0,
                    lo: port,
                    hi: port,
                    count: 0,
                    new: false,
                });
                g.enforced |= d.enforced;
                g.new |= d.new;
                g.lo = g.lo.min(port);
                g.hi = g.hi.max(port);
                g.count += count;
                program_ports.entry(program).or_default().push(port);
            }
        }
        for (program, mut g) in per_program {
            let mut p = program_ports.remove(program).unwrap_or_default();
            p.sort_unstable();
            p.dedup();
            g.ports = p.len();
            rows.push(Row::Group(g));
        }
    }
    rows.sort_by(|a, b| b.deny().cmp(&a.deny()).then(b.count().cmp(&a.count())));
    rows
}

#[cfg(test)]
mod tests {
    use super::super::Reports;
    use super::*;

    fn report(ports: &[u16]) -> Reports {
        let mut text = String::from(
            "{\"type\":\"run\",\"version\":1,\"mode\":\"block\",\"rules\":[\"loopback\"],\"argv\":[],\"started\":\"x\"}\n",
        );
        for p in ports {
            text.push_str(&format!("{{\"type\":\"connect\",\"pid\":5,\"exe\":\"/usr/bin/python3\",\"proto\":\"tcp\",\"addr\":\"127.0.0.1\",\"port\":{p},\"host\":null,\"decision\":\"allow\",\"enforced\":true,\"rule\":\"loopback\",\"count\":2}}\n"));
        }
        let mut r = Reports::default();
        r.add("r", text.as_bytes());
        r
    }

    #[test]
    fn many_ephemeral_ports_make_one_row_per_program() {
        let ports: Vec<u16> = (40000..40250).collect();
        let r = report(&ports);
        let d = r.destinations();
        let rows = rows(&d, 32768);
        assert_eq!(rows.len(), 1);
        let Row::Group(g) = &rows[0] else {
            panic!("not grouped")
        };
        assert_eq!((g.ports, g.lo, g.hi, g.count), (250, 40000, 40249, 500));
        assert_eq!(g.program, "python3");
    }

    #[test]
    fn a_few_ports_stay_separate() {
        let r = report(&[5432, 40001, 40002]);
        let d = r.destinations();
        assert_eq!(rows(&d, 32768).len(), 3);
    }

    #[test]
    fn classes_group_separately() {
        let mut ports: Vec<u16> = (40000..40010).collect();
        ports.extend([80, 443, 8080]);
        let r = report(&ports);
        let d = r.destinations();
        let rows = rows(&d, 32768);
        assert_eq!(rows.len(), 4, "one group and three single ports");
    }
}
