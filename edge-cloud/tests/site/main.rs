mod commands;
mod helpers;
mod hub;
mod site;
