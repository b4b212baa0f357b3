"""sdlaws.fit"""
