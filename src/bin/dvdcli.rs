//! `dvdcli`: the Docker Volume Driver CLI that Mesos (mesos-module-dvdi and
//! the `docker/volume` isolator) runs to mount plugin volumes. The logic
//! lives in [`berth::dvdcli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    berth::dvdcli::run(std::env::args_os().skip(1))
}
