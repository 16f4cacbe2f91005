/// Every subcommand, in the order `switchyard --help` lists them.
let commands: [Command] = [
    trainCommand,
    fixturesCreditCommand,
    predictCommand,
    modelsListCommand, modelsShowCommand, modelsRegisterCommand, modelsPromoteCommand,
    modelsRollbackCommand, modelsAuditCommand,
    benchScoreCommand,
]
